// LSD radix sort of packed 64-bit keys, shared by the arena (rows by offset) and the CPU backward
// (batch positions by id): a compaction after many single-row resizes must sort every live row,
// and std::sort of a million rows costs more than moving their data.
#pragma once
#include <cstdint>
#include <vector>

namespace pyscall {

// Bits needed to write x (0 for 0).
int bit_width(uint64_t x);

// Sorts keys on their bits [low_bits, low_bits + key_bits) only, stably. Small inputs take
// std::sort of the whole keys instead: the same order wherever the low bits keep keys distinct
// in their input order (a position or a distinct id packed there).
void sort_on_high_bits(std::vector<uint64_t>& keys, int low_bits, int key_bits);

// Sorts `rows` (ids) by offsets[id]; every offset is < max_offset.
void sort_rows_by_offset(std::vector<int64_t>& rows, const std::vector<int64_t>& offsets,
                         int64_t max_offset);

}  // namespace pyscall
