// Reading an arena whole: its statistics, its invariants (validate) and an arena rebuilt from a saved layout.
#include <algorithm>
#include <stdexcept>
#include <string>
#include <vector>

#include "arena/arena.h"

namespace pyscall {

ArenaStats Arena::stats() const {
  ArenaStats s{};
  const int64_t free_elems = capacity_ - used_;
  // capacity_bytes and used_bytes: the flat buffers and per-row state; the budget bounds them plus
  // row_metadata_bytes.
  s.capacity_bytes = capacity_ * bytes_per_element_ + num_rows() * bytes_per_row_;
  s.row_metadata_bytes = num_rows() * kMetadataBytesPerRow;
  s.used_bytes = used_ * bytes_per_element_ + num_rows() * bytes_per_row_;
  s.free_bytes = free_elems * bytes_per_element_;
  s.largest_free_bytes = free_.largest() * bytes_per_element_;
  s.fragmentation = free_elems > 0 ? 1.0 - double(free_.largest()) / double(free_elems) : 0.0;
  s.num_rows = num_rows();
  s.total_width = used_;
  s.bytes_per_element = bytes_per_element_;
  s.bytes_per_row = bytes_per_row_;
  s.metadata_bytes = static_cast<int64_t>(sizeof(Arena) + offsets_.capacity() * sizeof(int64_t) +
                                          widths_.capacity() * sizeof(int32_t) +
                                          free_.metadata_bytes());
  s.budget_bytes = budget_bytes_;
  s.free_extents = static_cast<int64_t>(free_.count());
  size_t scratch = spare_.capacity();
  if (plan_)
    for (const Step& st : plan_->steps) scratch += st.capacity();
  s.scratch_bytes = static_cast<int64_t>(
      scratch * 4 * sizeof(int64_t) + journal_.changes.capacity() * sizeof(Change) +
      journal_.offsets.capacity() * sizeof(int64_t) + journal_.widths.capacity() * sizeof(int32_t) +
      journal_.free.metadata_bytes());
  return s;
}

Arena Arena::with_layout(int64_t d_max, int64_t bytes_per_element, int64_t bytes_per_row,
                         int64_t budget_bytes, std::vector<int64_t> offsets,
                         std::vector<int32_t> widths, int64_t capacity) {
  Arena a(d_max, bytes_per_element, bytes_per_row, budget_bytes);
  if (offsets.size() != widths.size())
    throw std::invalid_argument("offsets and widths must have the same length");
  a.check_widths(widths);
  if (capacity < 0) throw std::invalid_argument("capacity must be >= 0");
  std::vector<std::pair<int64_t, int64_t>> rows;  // (offset, width) of the rows holding storage
  for (size_t i = 0; i < widths.size(); ++i) {
    a.used_ += widths[i];
    if (widths[i] > 0) rows.emplace_back(offsets[i], widths[i]);
  }
  std::sort(rows.begin(), rows.end());
  int64_t end = 0;  // the free extents are the gaps between rows
  for (auto [o, w] : rows) {
    if (o < end || o + w > capacity)
      throw std::invalid_argument("a row at offset " + std::to_string(o) + " overlaps another or "
                                  "ends past capacity " + std::to_string(capacity));
    if (o > end) a.free_.release(end, o - end);
    end = o + w;
  }
  if (end < capacity) a.free_.release(end, capacity - end);
  a.offsets_ = std::move(offsets);
  a.widths_ = std::move(widths);
  a.capacity_ = capacity;
  a.id_order_ = false;  // unknown
  a.uniform_width_ = a.find_uniform_width();
  if (a.budget_bytes_ >= 0 && a.held_bytes(capacity, a.num_rows()) > a.budget_bytes_)
    throw std::invalid_argument("the layout needs more than budget_bytes");
  a.validate();
  return a;
}

void Arena::validate() const {
  auto fail = [](const std::string& what) { throw std::runtime_error("arena invalid: " + what); };
  const int64_t n = num_rows();
  if (static_cast<int64_t>(offsets_.size()) != n) fail("offsets and widths differ in length");
  // Every element of [0, capacity) must belong to exactly one row or one
  // free extent: sort all extents by start and require them to tile it.
  struct Ext { int64_t start, len, row; };  // row -1: free extent
  std::vector<Ext> exts;
  exts.reserve(static_cast<size_t>(n) + free_.count());
  int64_t total = 0;
  for (int64_t i = 0; i < n; ++i) {
    const int64_t w = widths_[i], o = offsets_[i];
    if (w < 0 || w > d_max_)
      fail("row " + std::to_string(i) + " has width " + std::to_string(w) + " outside [0, d_max]");
    total += w;
    if (w == 0) continue;
    if (o < 0 || o + w > capacity_)
      fail("row " + std::to_string(i) + " [" + std::to_string(o) + ", " + std::to_string(o + w) +
           ") is outside capacity " + std::to_string(capacity_));
    exts.push_back({o, w, i});
  }
  if (total != used_)
    fail("used is " + std::to_string(used_) + " but the widths sum to " + std::to_string(total));
  int64_t free_total = 0, prev_end = -1;
  for (auto [o, len] : free_.by_offset()) {
    if (len <= 0) fail("free extent at " + std::to_string(o) + " has length " + std::to_string(len));
    if (o < 0 || o + len > capacity_)
      fail("free extent [" + std::to_string(o) + ", " + std::to_string(o + len) +
           ") is outside capacity " + std::to_string(capacity_));
    if (o == prev_end) fail("free extents touching at " + std::to_string(o) + " are not coalesced");
    if (!free_.by_length().count({len, o}))
      fail("free extent [" + std::to_string(o) + ", +" + std::to_string(len) +
           ") is missing from the best-fit index");
    prev_end = o + len;
    free_total += len;
    exts.push_back({o, len, -1});
  }
  if (free_.by_length().size() != free_.count())
    fail("best-fit index holds " + std::to_string(free_.by_length().size()) + " extents, not " +
         std::to_string(free_.count()));
  if (free_total != free_.total())
    fail("free total is " + std::to_string(free_.total()) + " but extents sum to " +
         std::to_string(free_total));
  if (used_ + free_total != capacity_)
    fail("used " + std::to_string(used_) + " + free " + std::to_string(free_total) +
         " != capacity " + std::to_string(capacity_));
  std::sort(exts.begin(), exts.end(), [](const Ext& a, const Ext& b) { return a.start < b.start; });
  auto name = [](const Ext& e) {
    return (e.row < 0 ? std::string("free extent") : "row " + std::to_string(e.row)) + " [" +
           std::to_string(e.start) + ", " + std::to_string(e.start + e.len) + ")";
  };
  for (size_t k = 1; k < exts.size(); ++k)
    if (exts[k].start < exts[k - 1].start + exts[k - 1].len)
      fail(name(exts[k - 1]) + " overlaps " + name(exts[k]));
  if (uniform_width_ != 0 && uniform_width_ != find_uniform_width())
    fail("uniform width is " + std::to_string(uniform_width_) + " but the rows are not all that wide at "
         "offset id * width");
  if (budget_bytes_ >= 0 && held_bytes(capacity_, n) > budget_bytes_)
    fail("capacity " + std::to_string(capacity_) + " elements and " + std::to_string(n) +
         " rows hold " + std::to_string(held_bytes(capacity_, n)) + " bytes, more than the budget of " +
         std::to_string(budget_bytes_));
}

}  // namespace pyscall
