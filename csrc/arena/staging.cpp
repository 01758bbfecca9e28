// The journal of a layout operation and what it serves: staging (an operation whose plan needs buffers
// allocated keeps its new metadata aside until commit(), so a failed allocation changes nothing) and undo()
// for callers of the raw arena. Every change of the metadata inside an operation goes through set_row and the
// free_* wrappers here, which record it.
#include <stdexcept>
#include <string>
#include <utility>

#include "arena/arena.h"

namespace pyscall {

void Arena::begin_journal() {
  discard_staged();  // an operation still staged never got its buffers
  commit();
  journal_.open = journal_.reversible = true;
  journal_.rows = num_rows();
  journal_.capacity = capacity_;
  journal_.used = used_;
  journal_.budget = budget_bytes_;
  journal_.id_order = id_order_;
  journal_.uniform_width = uniform_width_;
}

bool Arena::journaling() {
  if (journal_.snapshot || !journal_.reversible) return false;
  // Room first, so that recording a change cannot fail once the change is made.
  if (journal_.changes.size() == journal_.changes.capacity())
    journal_.changes.reserve(2 * journal_.changes.size() + 16);
  return true;
}

void Arena::set_row(int64_t id, int64_t off, int32_t w) {
  if (journaling()) journal_.changes.push_back({Change::kRow, widths_[id], id, offsets_[id]});
  offsets_[id] = off;
  widths_[id] = w;
  if (w != uniform_width_ || off != id * uniform_width_) uniform_width_ = 0;
}

void Arena::free_release(int64_t off, int64_t len) {
  const bool record = journaling();
  free_.release(off, len);
  if (record && len > 0) journal_.changes.push_back({Change::kReleased, 0, off, len});
}

int64_t Arena::free_take_best_fit(int64_t len) {
  const bool record = journaling();
  const int64_t off = free_.take_best_fit(len);
  if (record && off >= 0 && len > 0) journal_.changes.push_back({Change::kTaken, 0, off, len});
  return off;
}

bool Arena::free_take_head(int64_t off, int64_t len) {
  const bool record = journaling();
  const bool taken = free_.take_head(off, len);
  if (record && taken && len > 0) journal_.changes.push_back({Change::kTaken, 0, off, len});
  return taken;
}

void Arena::snapshot() {
  if (journal_.snapshot) return;
  journal_.offsets = offsets_;  // copies first: if one fails, nothing has changed
  journal_.widths = widths_;
  journal_.free = std::move(free_);  // relayout, the only caller, rebuilds free_ from scratch
  free_.clear();
  journal_.snapshot = true;
}

bool Arena::needs_buffers(int64_t capacity_after) const {
  return capacity_after != journal_.capacity || relayout_allocates_ ||
         (num_rows() != journal_.rows && bytes_per_row_ > 0);  // new rows' per-row state
}

Arena::PlanPtr Arena::finish(Plan& plan) {
  const Journal& j = journal_;
  plan.capacity_before = j.capacity;
  plan.capacity_after = capacity_;
  plan.used_after = used_;
  plan.rows_before = j.rows;
  plan.rows_after = num_rows();
  const bool relayout = plan.steps.size() == 1 && plan.steps[0].ordered;
  if (capacity_ == j.capacity) plan.replay = Replay::kInPlace;
  else if (relayout) plan.replay = Replay::kFresh;
  else plan.replay = capacity_ > j.capacity ? Replay::kGrow : Replay::kTrim;
  plan.staged = false;
  return plan_;
}

void Arena::stage() {
  Journal& j = journal_;
  if (!j.open || j.staged || !plan_) return;
  if (!needs_buffers(capacity_)) return;
  if (!j.reversible) throw std::logic_error("arena: an in-place re-layout cannot be staged");
  revert(true);
  j.staged = true;
  plan_->staged = true;
}

void Arena::discard_staged() {
  if (!journal_.staged) return;
  journal_.staged = false;
  staged_ = Staged();
  commit();  // the metadata is already the one before the operation
}

void Arena::undo() {
  Journal& j = journal_;
  if (j.staged) {  // the metadata is already as it was
    discard_staged();
    return;
  }
  if (!j.open) return;
  if (!j.reversible)
    throw std::logic_error("arena: this operation re-laid the rows out in place and cannot be undone");
  revert(false);
  commit();
}

void Arena::apply_change(const Change& c, bool redo) {
  switch (c.kind) {
    case Change::kRow:  // the width and offset it holds: old ones in the journal, new ones in a redo
      offsets_[c.a] = c.b;
      widths_[c.a] = c.w;
      break;
    case Change::kReleased:
      if (redo) free_.release(c.a, c.b);
      else free_.carve(c.a, c.b);
      break;
    case Change::kTaken:
      if (redo) free_.carve(c.a, c.b);
      else free_.release(c.a, c.b);
      break;
  }
}

void Arena::revert(bool keep) {
  Journal& j = journal_;
  Staged& st = staged_;
  if (keep) {
    st = Staged();
    st.capacity = capacity_;
    st.used = used_;
    st.budget = budget_bytes_;
    st.id_order = id_order_;
    st.uniform_width = uniform_width_;
  }
  if (j.snapshot) {  // a re-layout rewrote every row: its metadata goes aside whole
    st.whole = keep;
    if (keep) {
      st.offsets = std::move(offsets_);
      st.widths = std::move(widths_);
      st.free = std::move(free_);
    }
    if (keep) {  // the caller refreshes its views of the metadata after commit() or a failed allocation
      offsets_ = std::move(j.offsets);
      widths_ = std::move(j.widths);
    } else {  // undo: back into the same vectors, which views of the raw arena may still read
      offsets_.assign(j.offsets.begin(), j.offsets.end());
      widths_.assign(j.widths.begin(), j.widths.end());
    }
    free_ = std::move(j.free);
    j.offsets.clear();
    j.widths.clear();
    j.free.clear();
    j.snapshot = false;
  } else if (keep) {
    st.offsets.assign(offsets_.begin() + j.rows, offsets_.end());
    st.widths.assign(widths_.begin() + j.rows, widths_.end());
  }
  // The changes recorded before any snapshot, newest first; a staged operation keeps their new values.
  const bool redo = keep && !st.whole;
  if (redo) st.redo.reserve(j.changes.size());
  for (auto c = j.changes.rbegin(); c != j.changes.rend(); ++c) {
    if (redo)
      st.redo.push_back(c->kind == Change::kRow ? Change{Change::kRow, widths_[c->a], c->a, offsets_[c->a]} : *c);
    apply_change(*c, false);
  }
  j.changes.clear();
  offsets_.resize(static_cast<size_t>(j.rows));
  widths_.resize(static_cast<size_t>(j.rows));
  capacity_ = j.capacity;
  used_ = j.used;
  budget_bytes_ = j.budget;
  id_order_ = j.id_order;
  uniform_width_ = j.uniform_width;
}

void Arena::commit() {
  Journal& j = journal_;
  if (j.staged) {  // the operation's metadata becomes current: whole, or its changes redone oldest first
    Staged& st = staged_;
    if (st.whole) {
      offsets_ = std::move(st.offsets);
      widths_ = std::move(st.widths);
      free_ = std::move(st.free);
    } else {
      for (auto c = st.redo.rbegin(); c != st.redo.rend(); ++c) apply_change(*c, true);
      offsets_.insert(offsets_.end(), st.offsets.begin(), st.offsets.end());
      widths_.insert(widths_.end(), st.widths.begin(), st.widths.end());
    }
    capacity_ = st.capacity;
    used_ = st.used;
    budget_bytes_ = st.budget;
    id_order_ = st.id_order;
    uniform_width_ = st.uniform_width;
    j.staged = false;
    staged_ = Staged();
  }
  j.open = j.snapshot = false;
  std::vector<Change>().swap(j.changes);
  std::vector<int64_t>().swap(j.offsets);
  std::vector<int32_t>().swap(j.widths);
  j.free.clear();
}

}  // namespace pyscall
