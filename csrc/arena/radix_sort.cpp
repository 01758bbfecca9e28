#include "arena/radix_sort.h"

#include <algorithm>

namespace pyscall {

int bit_width(uint64_t x) {
  int b = 0;
  while (x >> b) ++b;
  return b;
}

void sort_on_high_bits(std::vector<uint64_t>& keys, int low_bits, int key_bits) {
  const size_t n = keys.size();
  if (n < 64) {  // a radix pass costs its counters whatever n is (std::sort of 1,024 random keys: 2x slower)
    std::sort(keys.begin(), keys.end());
    return;
  }
  constexpr int kBits = 13;  // 8192 32-bit counters: 32 KiB, in L1/L2
  const int passes = (key_bits + kBits - 1) / kBits;
  if (passes == 0) return;
  const int digit = (key_bits + passes - 1) / passes;  // balance the passes
  const uint64_t mask = (uint64_t{1} << digit) - 1;
  std::vector<uint64_t> tmp(n);
  std::vector<uint32_t> count(size_t{1} << digit);
  for (int p = 0; p < passes; ++p) {
    const int shift = low_bits + p * digit;
    std::fill(count.begin(), count.end(), 0);
    for (size_t i = 0; i < n; ++i) ++count[(keys[i] >> shift) & mask];
    uint32_t sum = 0;
    for (auto& c : count) {
      const uint32_t here = c;
      c = sum;
      sum += here;
    }
    for (size_t i = 0; i < n; ++i) tmp[count[(keys[i] >> shift) & mask]++] = keys[i];
    keys.swap(tmp);
  }
}

void sort_rows_by_offset(std::vector<int64_t>& rows, const std::vector<int64_t>& offsets,
                         int64_t max_offset) {
  const size_t n = rows.size();
  const int id_bits = bit_width(offsets.size());
  const int key_bits = bit_width(static_cast<uint64_t>(std::max<int64_t>(max_offset, 1)));
  if (id_bits + key_bits > 64) {
    std::sort(rows.begin(), rows.end(),
              [&](int64_t a, int64_t b) { return offsets[a] < offsets[b]; });
    return;
  }
  // Pack (offset, id) into one word and sort on the offset bits only: fewer
  // bytes per pass than separate key and id arrays.
  const uint64_t id_mask = (uint64_t{1} << id_bits) - 1;
  std::vector<uint64_t> a(n);
  for (size_t i = 0; i < n; ++i)
    a[i] = (static_cast<uint64_t>(offsets[rows[i]]) << id_bits) | static_cast<uint64_t>(rows[i]);
  sort_on_high_bits(a, id_bits, key_bits);
  for (size_t i = 0; i < n; ++i) rows[i] = static_cast<int64_t>(a[i] & id_mask);
}

}  // namespace pyscall
