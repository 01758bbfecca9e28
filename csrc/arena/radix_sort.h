// Orders row ids by their (distinct, non-negative) offsets: an LSD radix sort,
// because a compaction after many single-row resizes must sort every live row
// and std::sort of a million rows costs more than moving their data.
#pragma once
#include <cstdint>
#include <vector>

namespace pyscall {

// Sorts `rows` (ids) by offsets[id]; every offset is < max_offset.
void sort_rows_by_offset(std::vector<int64_t>& rows, const std::vector<int64_t>& offsets,
                         int64_t max_offset);

}  // namespace pyscall
