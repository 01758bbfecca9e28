#include "arena/radix_sort.h"

#include <algorithm>

namespace pyscall {

void sort_rows_by_offset(std::vector<int64_t>& rows, const std::vector<int64_t>& offsets,
                         int64_t max_offset) {
  constexpr int kBits = 11;  // 2048 counters: stays in L1
  constexpr int64_t kMask = (int64_t{1} << kBits) - 1;
  const size_t n = rows.size();
  if (n < 2048) {
    std::sort(rows.begin(), rows.end(),
              [&](int64_t a, int64_t b) { return offsets[a] < offsets[b]; });
    return;
  }
  // Sort (key, id) pairs so that passes stream instead of gathering offsets.
  std::vector<int64_t> key(n), key_tmp(n), id_tmp(n);
  for (size_t i = 0; i < n; ++i) key[i] = offsets[rows[i]];
  std::vector<size_t> count(size_t{1} << kBits);
  for (int shift = 0; (max_offset >> shift) > 0; shift += kBits) {
    std::fill(count.begin(), count.end(), 0);
    for (size_t i = 0; i < n; ++i) ++count[(key[i] >> shift) & kMask];
    size_t sum = 0;
    for (auto& c : count) {
      const size_t here = c;
      c = sum;
      sum += here;
    }
    for (size_t i = 0; i < n; ++i) {
      const size_t at = count[(key[i] >> shift) & kMask]++;
      key_tmp[at] = key[i];
      id_tmp[at] = rows[i];
    }
    key.swap(key_tmp);
    rows.swap(id_tmp);
  }
}

}  // namespace pyscall
