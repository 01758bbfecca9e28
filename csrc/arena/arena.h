// Metadata of a ragged arena: per-row offset and width, free extents, budget.
// Holds no data: every layout operation validates its input, checks the
// budget, mutates the metadata and returns the Plan that moves the data.
#pragma once
#include <cstdint>
#include <stdexcept>
#include <string>
#include <vector>

#include "arena/free_extents.h"
#include "arena/plan.h"

namespace pyscall {

// Raised when an operation would need more than budget_bytes; translated to
// pyscall.BudgetExceededError. The arena is unchanged when it is thrown.
struct BudgetError : std::runtime_error {
  using std::runtime_error::runtime_error;
};

struct ArenaStats {
  int64_t capacity_bytes, used_bytes, free_bytes, largest_free_bytes;
  double fragmentation;
  int64_t num_rows, total_width, bytes_per_element, bytes_per_row, metadata_bytes,
      budget_bytes, free_extents;
};

class Arena {
 public:
  // budget_bytes < 0: no budget. bytes_per_element: weight plus per-element
  // optimizer state; bytes_per_row: per-row optimizer state.
  Arena(int64_t d_max, int64_t bytes_per_element, int64_t bytes_per_row, int64_t budget_bytes);

  // New rows (ids num_rows()..) with these widths; their extents are zero-filled.
  Plan append(const std::vector<int32_t>& widths);
  // Batched, all-or-nothing. A duplicate id counts only with its LAST width.
  Plan resize(const std::vector<int64_t>& ids, const std::vector<int32_t>& widths);
  // Every row at once; capacity is trimmed to the total width.
  Plan set_widths(const std::vector<int32_t>& widths);
  // Width 0, storage freed. Duplicates are harmless.
  Plan release(const std::vector<int64_t>& ids);
  // Packs every row from offset 0 (order kept) and trims capacity to the total width.
  Plan compact();
  // A new budget (< 0: none); throws BudgetError, changing nothing, when the
  // current capacity would not fit in it.
  void set_budget(int64_t budget_bytes);
  // Throws std::runtime_error naming the first broken invariant.
  void validate() const;
  ArenaStats stats() const;

  int64_t num_rows() const { return static_cast<int64_t>(widths_.size()); }
  int64_t d_max() const { return d_max_; }
  int64_t capacity() const { return capacity_; }
  int64_t used() const { return used_; }
  const std::vector<int64_t>& offsets() const { return offsets_; }
  const std::vector<int32_t>& widths() const { return widths_; }
  // Free extents beyond which an operation ends with a compaction, so that
  // metadata stays within kMetadataBytesPerRow per row.
  size_t max_free_extents() const;
  static constexpr int64_t kMetadataBytesPerRow = 16;

 private:
  void check_widths(const std::vector<int32_t>& widths) const;
  void check_ids(const std::vector<int64_t>& ids) const;
  // Largest capacity (elements) the budget allows with `rows` rows.
  int64_t capacity_limit(int64_t rows) const;
  void check_budget(int64_t used_elements, int64_t rows, const char* op) const;
  // Full re-layout to `new_widths` (size num_rows()), packed from 0 in the
  // current offset order; rows without storage yet go last, in id order.
  // Appends one ordered step to `plan` and sets capacity to `capacity_after`.
  void relayout(const std::vector<int32_t>& new_widths, int64_t capacity_after, Plan& plan);
  // Grows capacity (within the budget) so that the tail extent holds `need`.
  bool grow_tail(int64_t need, int64_t rows);
  void compact_if_fragmented(Plan& plan);
  void reserve_rows(size_t n);

  std::vector<int64_t> offsets_;
  std::vector<int32_t> widths_;
  FreeExtents free_;
  int64_t capacity_ = 0, used_ = 0;
  int64_t d_max_, bytes_per_element_, bytes_per_row_, budget_bytes_;
};

}  // namespace pyscall
