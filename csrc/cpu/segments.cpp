// LSD radix sort of (id, position) pairs: O(n) per 11-bit digit of num_rows - 1 (two passes for a
// million rows), stable, so each id's positions stay in batch order.
#include "segments.h"

#include <array>
#include <utility>

namespace pyscall::cpu {
namespace {
struct Pair {
  int64_t id;
  int64_t pos;
};
constexpr int kDigitBits = 11;
constexpr int64_t kDigits = int64_t(1) << kDigitBits;
}  // namespace

Segments group_by_row(const int64_t* ids, int64_t n, int64_t num_rows) {
  std::vector<Pair> a(n), b(n);
  for (int64_t k = 0; k < n; ++k) a[k] = {ids[k], k};
  const uint64_t max_id = num_rows > 0 ? static_cast<uint64_t>(num_rows - 1) : 0;
  for (int shift = 0; shift < 64 && (max_id >> shift) != 0; shift += kDigitBits) {
    std::array<int64_t, kDigits> count{};
    for (const Pair& p : a) ++count[(static_cast<uint64_t>(p.id) >> shift) & (kDigits - 1)];
    int64_t sum = 0;
    for (int64_t& c : count) sum += std::exchange(c, sum);
    for (const Pair& p : a) b[count[(static_cast<uint64_t>(p.id) >> shift) & (kDigits - 1)]++] = p;
    a.swap(b);
  }
  Segments s;
  s.pos.resize(n);
  s.row.reserve(n);
  s.start.reserve(n + 1);
  for (int64_t k = 0; k < n; ++k) {
    if (k == 0 || a[k].id != a[k - 1].id) {
      s.row.push_back(a[k].id);
      s.start.push_back(k);
    }
    s.pos[k] = a[k].pos;
  }
  s.start.push_back(n);
  return s;
}

}  // namespace pyscall::cpu
