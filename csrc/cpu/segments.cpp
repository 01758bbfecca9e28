// Groups batch positions by id: each (id, position) pair packed into one 64-bit key, position in
// the low bits, sorted on the id bits only. Stable, so each id's positions stay in batch order.
#include "segments.h"

#include <stdexcept>

#include "arena/radix_sort.h"

namespace pyscall::cpu {

Segments group_by_row(const int64_t* ids, int64_t n, int64_t num_rows) {
  const int pos_bits = bit_width(static_cast<uint64_t>(n));
  const int id_bits = bit_width(num_rows > 0 ? static_cast<uint64_t>(num_rows - 1) : 0);
  if (pos_bits + id_bits > 64)
    throw std::invalid_argument("batch and table too large to sort: ids and positions need more than 64 bits");
  std::vector<uint64_t> a(n);
  for (int64_t k = 0; k < n; ++k) a[k] = static_cast<uint64_t>(ids[k]) << pos_bits | static_cast<uint64_t>(k);
  sort_on_high_bits(a, pos_bits, id_bits);
  const uint64_t pos_mask = (uint64_t(1) << pos_bits) - 1;
  Segments s;
  s.pos.resize(n);
  s.row.reserve(n);
  s.start.reserve(n + 1);
  for (int64_t k = 0; k < n; ++k) {
    const int64_t id = static_cast<int64_t>(a[k] >> pos_bits);
    if (k == 0 || id != s.row.back()) {
      s.row.push_back(id);
      s.start.push_back(k);
    }
    s.pos[k] = static_cast<int64_t>(a[k] & pos_mask);
  }
  s.start.push_back(n);
  return s;
}

}  // namespace pyscall::cpu
