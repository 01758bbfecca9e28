// Groups batch positions by row id: the deterministic replacement for float atomics in backward.
#pragma once
#include <cstdint>
#include <vector>

namespace pyscall::cpu {

// Unique rows of a batch; segment u is row[u], touched at positions pos[start[u] : start[u+1]],
// which are in increasing order (the sort is stable).
struct Segments {
  std::vector<int64_t> row;
  std::vector<int64_t> start;
  std::vector<int64_t> pos;
  int64_t size() const { return static_cast<int64_t>(row.size()); }
};

// Ids must already be checked to lie in [0, num_rows).
Segments group_by_row(const int64_t* ids, int64_t n, int64_t num_rows);

}  // namespace pyscall::cpu
