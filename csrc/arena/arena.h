// Metadata of a ragged arena: per-row offset and width, free extents, budget.
// Holds no data: every layout operation validates its input, checks the
// budget, works out the new metadata and returns the Plan that moves the data.
// stage() then holds the new metadata aside when the plan needs buffers
// allocated (a new capacity, new rows with per-row state, or a device replay):
// the caller allocates, and commit() makes the operation's metadata current;
// an allocation that fails leaves the arena as it was (the next operation
// drops the staged one). The journal of what an operation changed is what
// staging (and undo(), for callers of the raw arena) reverts.
//
// Plan storage is reused: a plan of a million rows is 32 MB, and faulting
// fresh pages in costs more than the re-layout itself. The arena keeps its
// last plan and, at the next layout operation, recycles its arrays if nothing
// else holds it (no Python Plan, Step or step array is alive); otherwise it
// starts a new one. A plan handed out therefore never changes under its holder.
#pragma once
#include <cstdint>
#include <memory>
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

// Raised when an operation would need more bytes than the machine can hold at all (its memory
// limit, see set_memory_limit); translated to MemoryError. The arena is unchanged when it is thrown.
struct MemoryLimitError : std::runtime_error {
  using std::runtime_error::runtime_error;
};

struct ArenaStats {
  int64_t capacity_bytes, used_bytes, free_bytes, largest_free_bytes;
  double fragmentation;
  int64_t num_rows, total_width, bytes_per_element, bytes_per_row, metadata_bytes,
      budget_bytes, free_extents;
  int64_t row_metadata_bytes;  // what the budget counts for the metadata: kMetadataBytesPerRow a row
  int64_t scratch_bytes;  // plan arrays kept for reuse and an uncommitted journal (not metadata)
};

class Arena {
 public:
  // budget_bytes < 0: no budget. bytes_per_element: weight plus per-element
  // optimizer state; bytes_per_row: per-row optimizer state.
  Arena(int64_t d_max, int64_t bytes_per_element, int64_t bytes_per_row, int64_t budget_bytes);

  using PlanPtr = std::shared_ptr<Plan>;

  // New rows (ids num_rows()..) with these widths; their extents are zero-filled.
  PlanPtr append(const std::vector<int32_t>& widths);
  // Batched, all-or-nothing. A duplicate id counts only with its LAST width.
  PlanPtr resize(const std::vector<int64_t>& ids, const std::vector<int32_t>& widths);
  // Every row at once, packed from 0. Capacity becomes the total width when
  // that grows it or frees more than kTrimFraction of it; otherwise it is
  // kept, so that buffers are reused in place instead of reallocated.
  PlanPtr set_widths(const std::vector<int32_t>& widths);
  // Width 0, storage freed. Duplicates are harmless.
  PlanPtr release(const std::vector<int64_t>& ids);
  // Packs every row from offset 0 (order kept) and trims capacity to the total width.
  PlanPtr compact();
  // A new budget (< 0: none), a layout operation like the others: when only the free space is over it,
  // its plan compacts the rows first. Throws BudgetError, changing nothing, when the rows in use do not fit.
  PlanPtr set_budget(int64_t budget_bytes);
  // Bytes no table can exceed (< 0: none): the memory of the machine that holds the buffers.
  // Checked with the budget, before anything is allocated; throws MemoryLimitError.
  void set_memory_limit(int64_t bytes) { memory_limit_ = bytes < 0 ? -1 : bytes; }
  // Throws BudgetError (or MemoryLimitError), changing nothing, unless `rows` more rows holding
  // `elements` more elements would fit: lets a caller refuse before it allocates their widths or init.
  // `op` names what the caller is doing in the message (a table's construction is not an append).
  void check_append(int64_t rows, int64_t elements, const char* op = "append") const;
  // After a layout operation: when its plan needs buffers allocated (plan.staged is set then), puts
  // the metadata back as it was and keeps the operation's aside until commit(). A no-op otherwise.
  void stage();
  // Reverts the metadata of the last layout operation (valid until commit()
  // or the next operation; a no-op after either). The plan it returned must
  // not have been replayed. An operation whose buffers need no allocation
  // (a re-layout at the capacity it started with, replayed in place) keeps
  // no journal: undo() then throws std::logic_error.
  void undo();
  // Whether every re-layout's plan is replayed into new buffers (true on a
  // GPU), so that even one at an unchanged capacity must be undoable.
  void set_relayout_allocates(bool allocates) { relayout_allocates_ = allocates; }
  // Makes a staged operation's metadata current, then forgets what undo() would need.
  void commit();
  // Throws std::runtime_error naming the first broken invariant.
  void validate() const;
  // An arena with exactly this layout (how a pickled or copied table comes back): rows at these
  // offsets, the rest of [0, capacity) free. Throws std::invalid_argument for a layout that is
  // not one (rows overlapping or outside capacity, widths outside [0, d_max], over the budget).
  static Arena with_layout(int64_t d_max, int64_t bytes_per_element, int64_t bytes_per_row,
                           int64_t budget_bytes, std::vector<int64_t> offsets,
                           std::vector<int32_t> widths, int64_t capacity);
  ArenaStats stats() const;

  int64_t num_rows() const { return static_cast<int64_t>(widths_.size()); }
  int64_t d_max() const { return d_max_; }
  int64_t capacity() const { return capacity_; }
  int64_t used() const { return used_; }
  const std::vector<int64_t>& offsets() const { return offsets_; }
  const std::vector<int32_t>& widths() const { return widths_; }
  // W > 0 while every row is known to have width W at offset id * W (a dense table, as the arena
  // starts without widths): kernels then find a row without reading its metadata. 0 otherwise.
  int32_t uniform_width() const { return uniform_width_; }
  // Free extents beyond which an operation ends with a compaction, so that
  // metadata stays within kMetadataBytesPerRow per row.
  size_t max_free_extents() const;
  // The budget counts the metadata at this many bytes a row: offset and width (12 bytes, 13.5 with
  // the vectors' growth room) and the free extents, which the arena keeps within it by compacting.
  static constexpr int64_t kMetadataBytesPerRow = 16;
  // set_widths trims capacity only when that frees more than 1/kTrimFraction.
  static constexpr int64_t kTrimFraction = 8;

 private:
  void check_widths(const std::vector<int32_t>& widths) const;
  void check_ids(const std::vector<int64_t>& ids) const;
  // Largest capacity (elements) the budget allows with `rows` rows.
  int64_t capacity_limit(int64_t rows) const;
  void check_budget(int64_t used_elements, int64_t rows, const char* op) const;
  // Bytes counted against the budget for `elements` elements of capacity and `rows` rows
  // (saturating: an absurd request compares as huge instead of overflowing).
  int64_t held_bytes(int64_t elements, int64_t rows) const;
  int64_t row_cost() const { return bytes_per_row_ + kMetadataBytesPerRow; }
  // Full re-layout to `new_widths` (size num_rows(), summing to `new_used`),
  // packed from 0 in the current offset order. Rows without storage yet take
  // their id position when the live rows are in id order (the common case),
  // else go last in id order. Appends one ordered step to `plan` and sets
  // capacity to `capacity_after`.
  void relayout(const std::vector<int32_t>& new_widths, int64_t new_used, int64_t capacity_after,
                Plan& plan);
  bool live_rows_in_id_order() const;
  // uniform_width_ after a re-layout or a rebuilt layout: checks every row.
  int32_t find_uniform_width() const;
  // relayout's step and new offsets: packs the rows row_at(0..count) in that
  // order (every live row, in offset order, and the rows getting storage).
  template <typename RowAt>
  void sweep(RowAt row_at, int64_t count, const std::vector<int32_t>& new_widths, Step& step);
  // The plan a layout operation fills: the last one recycled when unshared.
  Plan& start_plan();
  // An empty step, with the largest spare storage.
  Step take_step(bool ordered);
  // Grows capacity (within the budget) so that the tail extent holds `need`.
  bool grow_tail(int64_t need, int64_t rows);
  void compact_if_fragmented(Plan& plan);
  // Whether the current operation's plan needs buffers allocated before its metadata may change: a new
  // capacity, per-row state for new rows, or any plan of a device replay (set_relayout_allocates).
  bool needs_buffers(int64_t capacity_after) const;
  // The end of every layout operation: the plan's capacities, rows and replay mode.
  PlanPtr finish(Plan& plan);
  // Drops a staged operation (its buffers never came): the metadata stays as it is.
  void discard_staged();
  // Puts the metadata back as it was before the operation; with `keep`, the operation's goes to staged_.
  void revert(bool keep);
  void reserve_rows(size_t n);

  // The journal. Every change of the metadata goes through these, so that
  // undo() can revert them newest first. A re-layout rewrites every row and
  // the free extents: it copies them whole instead, and once that copy exists
  // nothing later needs recording (restoring it reverts every later change).
  void begin_journal();
  bool journaling();  // whether to record the next change (with room for it reserved)
  void set_row(int64_t id, int64_t off, int32_t w);
  void free_release(int64_t off, int64_t len);
  int64_t free_take_best_fit(int64_t len);
  bool free_take_head(int64_t off, int64_t len);
  void snapshot();  // relayout's: takes the free extents, which it then rebuilds
  struct Change {
    enum Kind : int32_t { kRow, kReleased, kTaken } kind;
    int32_t w;       // kRow: the old width (the new one in a redo)
    int64_t a, b;    // kRow: id, old offset (new in a redo); else the extent's offset and length
  };
  // Reverts `c` (a journal's) or, with redo, applies it again (a staged operation's).
  void apply_change(const Change& c, bool redo);
  struct Journal {
    bool open = false, snapshot = false, reversible = true, staged = false;
    int64_t rows = 0, capacity = 0, used = 0, budget = -1;
    bool id_order = true;
    int32_t uniform_width = 0;
    std::vector<Change> changes;
    std::vector<int64_t> offsets;
    std::vector<int32_t> widths;
    FreeExtents free;
  } journal_;
  // A staged operation's metadata: whole (after a re-layout), or the journal's changes with their
  // new values (redo, newest first) and the appended rows.
  struct Staged {
    bool whole = false;
    int64_t capacity = 0, used = 0, budget = -1;
    bool id_order = true;
    int32_t uniform_width = 0;
    std::vector<int64_t> offsets;  // whole: every row; else the appended rows
    std::vector<int32_t> widths;
    FreeExtents free;
    std::vector<Change> redo;
  } staged_;

  std::shared_ptr<Plan> plan_;  // the last plan handed out
  Step spare_;                   // storage of a recycled step, for the next take_step
  std::vector<int64_t> offsets_;
  std::vector<int32_t> widths_;
  // True only while live rows are known to lie in id order (a re-layout then skips the pass
  // that checks it); false means unknown.
  bool id_order_ = true;
  // See uniform_width(); like id_order_, 0 may also mean unknown. set_row and append clear it for a
  // row that breaks it; a re-layout recomputes it.
  int32_t uniform_width_ = 0;
  FreeExtents free_;
  int64_t capacity_ = 0, used_ = 0;
  int64_t d_max_, bytes_per_element_, bytes_per_row_, budget_bytes_;
  int64_t memory_limit_ = -1;
  bool relayout_allocates_ = false;
};

}  // namespace pyscall
