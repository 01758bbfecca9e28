// Arena layout operations (append, resize, set_widths, release, compact) and the re-layout they share; the
// journal and staging are staging.cpp, statistics and checks inspect.cpp. One file: the operations share the
// private helpers (grow_tail, relayout, sweep) and read best in one place.
#include "arena/arena.h"

#include <algorithm>
#include <limits>
#include <numeric>

#include "arena/radix_sort.h"

namespace pyscall {

namespace {
constexpr int64_t kNoLimit = std::numeric_limits<int64_t>::max() / 4;
}

Arena::Arena(int64_t d_max, int64_t bytes_per_element, int64_t bytes_per_row, int64_t budget_bytes)
    : d_max_(d_max),
      bytes_per_element_(bytes_per_element),
      bytes_per_row_(bytes_per_row),
      budget_bytes_(budget_bytes < 0 ? -1 : budget_bytes) {
  if (d_max < 0 || d_max > std::numeric_limits<int32_t>::max())
    throw std::invalid_argument("d_max must be in [0, 2**31), got " + std::to_string(d_max));
  if (bytes_per_element < 1 || bytes_per_row < 0)
    throw std::invalid_argument("bytes_per_element must be >= 1 and bytes_per_row >= 0");
}

void Arena::check_widths(const std::vector<int32_t>& widths) const {
  for (size_t i = 0; i < widths.size(); ++i)
    if (widths[i] < 0 || widths[i] > d_max_)
      throw std::invalid_argument("width " + std::to_string(widths[i]) + " at position " +
                                  std::to_string(i) + " is outside [0, d_max=" +
                                  std::to_string(d_max_) + "]");
}

void Arena::check_ids(const std::vector<int64_t>& ids) const {
  const int64_t n = num_rows();
  for (size_t i = 0; i < ids.size(); ++i)
    if (ids[i] < 0 || ids[i] >= n)
      throw std::out_of_range("row id " + std::to_string(ids[i]) + " at position " +
                              std::to_string(i) + " is outside [0, num_rows=" +
                              std::to_string(n) + ")");
}

int64_t Arena::held_bytes(int64_t elements, int64_t rows) const {
  const __int128 bytes = static_cast<__int128>(elements) * bytes_per_element_ +
                         static_cast<__int128>(rows) * row_cost();
  return bytes > kNoLimit ? kNoLimit : static_cast<int64_t>(bytes);
}

int64_t Arena::capacity_limit(int64_t rows) const {
  int64_t limit = kNoLimit;
  for (const int64_t bytes : {budget_bytes_, memory_limit_}) {
    if (bytes < 0) continue;
    const int64_t left = bytes - held_bytes(0, rows);
    limit = std::min(limit, left < 0 ? int64_t{-1} : left / bytes_per_element_);
  }
  return limit;
}

void Arena::check_budget(int64_t used_elements, int64_t rows, const char* op) const {
  const int64_t need = held_bytes(used_elements, rows);
  auto what = [&] {
    return std::string(op) + " needs " + std::to_string(need) + " bytes (total width " +
           std::to_string(used_elements) + " x " + std::to_string(bytes_per_element_) +
           " bytes/element + " + std::to_string(rows) + " rows x " + std::to_string(row_cost()) +
           " bytes/row, of which " + std::to_string(kMetadataBytesPerRow) + " are the row's metadata)";
  };
  if (budget_bytes_ >= 0 && need > budget_bytes_)
    throw BudgetError(what() + " but budget_bytes is " + std::to_string(budget_bytes_));
  if (memory_limit_ >= 0 && need > memory_limit_)
    throw MemoryLimitError(what() + ", more than the " + std::to_string(memory_limit_) +
                           " bytes of memory of the machine that would hold it");
}

void Arena::check_append(int64_t rows, int64_t elements, const char* op) const {
  if (rows < 0 || elements < 0) throw std::invalid_argument("check_append: rows and elements must be >= 0");
  check_budget(used_ + elements, num_rows() + rows, op);
}

Arena::PlanPtr Arena::set_budget(int64_t budget_bytes) {
  const int64_t held = held_bytes(capacity_, num_rows());
  if (budget_bytes >= 0 && held_bytes(used_, num_rows()) > budget_bytes)
    throw BudgetError("the table holds " + std::to_string(held) + " bytes (" +
                      std::to_string(num_rows() * kMetadataBytesPerRow) +
                      " of them its rows' metadata), more than the new budget of " +
                      std::to_string(budget_bytes) + " bytes");
  begin_journal();
  Plan& plan = start_plan();
  // Only the free space is over the new budget: pack the rows and trim it away.
  if (budget_bytes >= 0 && held > budget_bytes) relayout(widths_, used_, used_, plan);
  budget_bytes_ = budget_bytes;
  return finish(plan);
}

void Arena::reserve_rows(size_t n) {
  // Grow by ~1/8, not 2x: these two vectors are most of the metadata.
  if (n <= widths_.capacity()) return;
  const size_t want = std::max(n, widths_.size() + widths_.size() / 8);
  offsets_.reserve(want);
  widths_.reserve(want);
}

size_t Arena::max_free_extents() const {
  const int64_t vectors = static_cast<int64_t>(offsets_.capacity() * sizeof(int64_t) +
                                               widths_.capacity() * sizeof(int32_t));
  const int64_t spare = kMetadataBytesPerRow * num_rows() - vectors;
  const int64_t per_extent = 2 * static_cast<int64_t>(FreeExtents::kNodeBytes);
  // A floor keeps tiny tables from compacting on every operation.
  return static_cast<size_t>(std::max<int64_t>(64, spare / per_extent));
}

void Arena::compact_if_fragmented(Plan& plan) {
  if (free_.count() > max_free_extents()) relayout(widths_, used_, capacity_, plan);
}

bool Arena::grow_tail(int64_t need, int64_t rows) {
  const int64_t tail = free_.length_ending_at(capacity_);
  if (tail >= need) return true;
  const int64_t min_cap = capacity_ + need - tail;
  const int64_t limit = capacity_limit(rows);
  if (min_cap > limit) return false;
  // 1.5x amortises buffer reallocation; the budget caps it.
  const int64_t want = std::min(std::max(min_cap, capacity_ + capacity_ / 2), limit);
  free_release(capacity_, want - capacity_);
  capacity_ = want;
  return true;
}

Plan& Arena::start_plan() {
  if (plan_ && plan_.use_count() == 1) {
    for (Step& s : plan_->steps)
      if (s.capacity() > spare_.capacity()) spare_ = std::move(s);
    plan_->steps.clear();
    plan_->reset_rows.clear();
  } else {
    plan_ = std::make_shared<Plan>();
  }
  return *plan_;
}

Step Arena::take_step(bool ordered) {
  Step s = std::move(spare_);
  spare_ = Step();
  s.clear();
  s.ordered = ordered;
  return s;
}

// In-place safety of the re-layout. Rows with storage keep their relative
// order and are packed from 0, so destinations are disjoint and ordered like
// the sources. A right-mover (dst > src) can only overwrite sources of rows to
// its right that also move right, up to the first row that moves left or
// stays (that row has src >= dst >= every new end before it). A left-mover
// (dst <= src) or stayer can only overwrite sources of rows to its left, and
// of the right-movers that directly follow it (its new end is the next row's
// dst). So every maximal run of right-movers goes in descending order, before
// the left-mover that precedes it; everything else goes in ascending order;
// rows that had no storage come last (pure zero fills, once every source has
// been read). Replaying the step then sweeps the buffer once, upwards. Every
// live row is listed, src == dst included, so the step is also correct out
// of place.
void Arena::relayout(const std::vector<int32_t>& new_widths, int64_t new_used,
                     int64_t capacity_after, Plan& plan) {
  // Only an operation whose buffers get allocated is staged (and so needs the old metadata kept); a
  // re-layout that needs none runs in place and keeps no copy.
  if (journal_.snapshot || needs_buffers(capacity_after)) snapshot();
  else journal_.reversible = false;
  const int64_t n = num_rows();
  Step step = take_step(true);
  const bool id_order = id_order_ || live_rows_in_id_order();
  if (id_order) {
    sweep([](int64_t k) { return k; }, n, new_widths, step);
  } else {
    std::vector<int64_t> order;
    order.reserve(static_cast<size_t>(n));
    for (int64_t i = 0; i < n; ++i)
      if (widths_[i] > 0) order.push_back(i);
    sort_rows_by_offset(order, offsets_, capacity_);
    for (int64_t i = 0; i < n; ++i)
      if (widths_[i] == 0 && new_widths[i] > 0) order.push_back(i);
    sweep([&](int64_t k) { return order[k]; }, static_cast<int64_t>(order.size()), new_widths,
          step);
  }
  if (&new_widths != &widths_) std::copy(new_widths.begin(), new_widths.end(), widths_.begin());
  id_order_ = id_order;  // a sweep in offset order packs rows in that order
  uniform_width_ = find_uniform_width();
  used_ = new_used;
  capacity_ = capacity_after;
  free_.clear();
  free_.release(used_, capacity_ - used_);
  if (step.size() > 0) plan.steps.push_back(std::move(step));
  else spare_ = std::move(step);
}

int32_t Arena::find_uniform_width() const {
  const int64_t n = num_rows();
  const int32_t w = n > 0 ? widths_[0] : 0;
  if (w <= 0) return 0;
  for (int64_t id = 0; id < n; ++id)
    if (widths_[id] != w || offsets_[id] != id * w) return 0;
  return w;
}

bool Arena::live_rows_in_id_order() const {
  for (int64_t id = 0, last = -1; id < num_rows(); ++id)
    if (widths_[id] > 0) {
      if (offsets_[id] <= last) return false;
      last = offsets_[id];
    }
  return true;
}

template <typename RowAt>
void Arena::sweep(RowAt row_at, int64_t count, const std::vector<int32_t>& new_widths,
                  Step& step) {
  step.resize(static_cast<size_t>(count));  // at most one move per row
  size_t m = 0;
  // The left-mover before a run of right-movers is held back until the run
  // is emitted.
  int64_t pos = 0;
  bool held = false, newborn = false;
  int64_t h_src = 0, h_dst = 0, h_copy = 0, h_total = 0;
  auto flush = [&] {
    if (held) step.set(m++, h_src, h_dst, h_copy, h_total);
    held = false;
  };
  for (int64_t k = 0; k < count;) {
    const int64_t id = row_at(k);
    const int64_t w_new = new_widths[id], w_old = widths_[id], off = offsets_[id];
    if (w_old == 0 || w_new == 0) {  // no move: dropped, or a zero fill emitted last
      newborn = newborn || w_new > 0;
      offsets_[id] = w_new > 0 ? pos : 0;
      pos += w_new;
      ++k;
    } else if (pos <= off) {  // moves left or stays
      flush();
      held = true;
      h_src = off, h_dst = pos, h_copy = std::min(w_old, w_new), h_total = w_new;
      offsets_[id] = pos;
      pos += w_new;
      ++k;
    } else {  // a run of right-movers, up to the next live row that does not move right
      int64_t end = k + 1, end_pos = pos + w_new;
      for (; end < count; ++end) {
        const int64_t r = row_at(end), w = new_widths[r];
        if (widths_[r] > 0 && w > 0 && end_pos <= offsets_[r]) break;
        end_pos += w;
      }
      for (int64_t j = end, p = end_pos; j-- > k;) {
        const int64_t r = row_at(j), w = new_widths[r], w_was = widths_[r];
        p -= w;
        if (w_was > 0 && w > 0) step.set(m++, offsets_[r], p, std::min(w_was, w), w);
        else newborn = newborn || w > 0;
        offsets_[r] = w > 0 ? p : 0;
      }
      flush();
      pos = end_pos;
      k = end;
    }
  }
  flush();
  if (newborn)
    for (int64_t k = 0; k < count; ++k) {
      const int64_t id = row_at(k);
      if (widths_[id] == 0 && new_widths[id] > 0)
        step.set(m++, offsets_[id], offsets_[id], 0, new_widths[id]);
    }
  step.resize(m);
}

Arena::PlanPtr Arena::append(const std::vector<int32_t>& widths) {
  check_widths(widths);
  int64_t total = 0;
  for (int32_t w : widths) total += w;
  const int64_t rows = num_rows() + static_cast<int64_t>(widths.size());
  check_budget(used_ + total, rows, "append");

  begin_journal();
  Plan& plan = start_plan();
  const int64_t limit = capacity_limit(rows);
  // The new rows' per-row state can leave too little room for the current
  // capacity: then a compaction trims it (below).
  int64_t base = -1;
  if (capacity_ <= limit && total > 0) {
    base = free_take_best_fit(total);
    if (base < 0 && grow_tail(total, rows)) {
      base = capacity_ - free_.length_ending_at(capacity_);
      free_take_head(base, total);
    }
  }
  const bool fast = capacity_ <= limit && (total == 0 || base >= 0);
  reserve_rows(static_cast<size_t>(rows));
  const int64_t first = num_rows();
  if (fast) {
    Step fill = take_step(false);
    int64_t pos = base;
    // The first rows of a table set the uniform width; later ones keep it only if they match it.
    int32_t uniform = first == 0 && !widths.empty() ? widths[0] : uniform_width_;
    for (int32_t w : widths) {
      if (w != uniform || pos != num_rows() * int64_t(uniform)) uniform = 0;
      offsets_.push_back(w > 0 ? pos : 0);
      widths_.push_back(w);
      if (w > 0) fill.push(pos, pos, 0, w);
      pos += w;
    }
    used_ += total;
    uniform_width_ = uniform > 0 ? uniform : 0;
    if (total > 0) id_order_ = false;  // placed at a free extent, maybe below older rows
    if (fill.size() > 0) plan.steps.push_back(std::move(fill));
    else spare_ = std::move(fill);
  } else {
    offsets_.resize(static_cast<size_t>(rows), 0);
    widths_.resize(static_cast<size_t>(rows), 0);
    std::vector<int32_t> new_widths(widths_);
    std::copy(widths.begin(), widths.end(), new_widths.begin() + first);
    relayout(new_widths, used_ + total, std::min(std::max(capacity_, used_ + total), limit), plan);
  }
  compact_if_fragmented(plan);
  return finish(plan);
}

Arena::PlanPtr Arena::set_widths(const std::vector<int32_t>& widths) {
  if (static_cast<int64_t>(widths.size()) != num_rows())
    throw std::invalid_argument("set_widths needs one width per row: got " +
                                std::to_string(widths.size()) + ", num_rows is " +
                                std::to_string(num_rows()));
  check_widths(widths);
  int64_t total = 0;
  for (int32_t w : widths) total += w;
  check_budget(total, num_rows(), "set_widths");
  // Keeping capacity avoids reallocating (and faulting in) every buffer.
  const bool trim = total > capacity_ || (capacity_ - total) * kTrimFraction > capacity_;
  begin_journal();
  Plan& plan = start_plan();
  relayout(widths, total, trim ? total : capacity_, plan);
  return finish(plan);
}

Arena::PlanPtr Arena::compact() {
  begin_journal();
  Plan& plan = start_plan();
  relayout(widths_, used_, used_, plan);
  return finish(plan);
}

Arena::PlanPtr Arena::release(const std::vector<int64_t>& ids) {
  check_ids(ids);
  begin_journal();
  Plan& plan = start_plan();
  plan.reset_rows.assign(ids.begin(), ids.end());  // every id given, storage or not
  for (int64_t id : ids) {
    if (widths_[id] == 0) continue;
    free_release(offsets_[id], widths_[id]);
    used_ -= widths_[id];
    set_row(id, 0, 0);
  }
  compact_if_fragmented(plan);
  return finish(plan);
}

Arena::PlanPtr Arena::resize(const std::vector<int64_t>& ids, const std::vector<int32_t>& widths) {
  if (ids.size() != widths.size())
    throw std::invalid_argument("resize needs one width per id: got " +
                                std::to_string(widths.size()) + " widths for " +
                                std::to_string(ids.size()) + " ids");
  check_ids(ids);
  check_widths(widths);
  const int64_t n = num_rows();

  // A big batch costs about as much as moving everything: re-layout once.
  if (static_cast<int64_t>(ids.size()) >= std::max<int64_t>(n / 8, 1)) {
    std::vector<int32_t> new_widths(widths_);
    int64_t total = used_;
    for (size_t i = 0; i < ids.size(); ++i) {  // in order, so the last width wins
      total += widths[i] - new_widths[ids[i]];
      new_widths[ids[i]] = widths[i];
    }
    check_budget(total, n, "resize");
    begin_journal();
    Plan& plan = start_plan();
    relayout(new_widths, total, std::max(capacity_, total), plan);
    return finish(plan);
  }

  // Last-wins dedupe: stable order by id, keep the last pair of each id.
  std::vector<std::pair<int64_t, int32_t>> by_id(ids.size());
  for (size_t i = 0; i < ids.size(); ++i) by_id[i] = {ids[i], static_cast<int32_t>(i)};
  std::sort(by_id.begin(), by_id.end());
  std::vector<std::pair<int64_t, int32_t>> shrinks, grows;  // (id, new width)
  int64_t total = used_;
  for (size_t k = 0; k < by_id.size(); ++k) {
    if (k + 1 < by_id.size() && by_id[k + 1].first == by_id[k].first) continue;
    const int64_t id = by_id[k].first;
    const int32_t w = widths[by_id[k].second];
    if (w == widths_[id]) continue;
    total += w - widths_[id];
    (w < widths_[id] ? shrinks : grows).emplace_back(id, w);
  }
  check_budget(total, n, "resize");
  begin_journal();
  Plan& plan = start_plan();

  // Shrinks free their tails and move nothing.
  for (auto [id, w] : shrinks) {
    free_release(offsets_[id] + w, widths_[id] - w);
    used_ -= widths_[id] - w;
    set_row(id, w == 0 ? 0 : offsets_[id], w);
  }
  // Grows: in place when the next extent is free, else relocate. Old extents
  // are freed only when the step closes, so every move in a step reads a
  // source no other move of the step writes.
  Step step = take_step(false);
  std::vector<std::pair<int64_t, int64_t>> deferred;
  auto close_step = [&] {
    if (step.size() > 0) plan.steps.push_back(std::move(step));
    step = Step();
    for (auto [off, len] : deferred) free_release(off, len);
    deferred.clear();
  };
  for (size_t g = 0; g < grows.size(); ++g) {
    const auto [id, w] = grows[g];
    const int64_t old = widths_[id], off = offsets_[id];
    auto grow_in_place = [&] { return old > 0 && free_take_head(off + old, w - old); };
    bool in_place = grow_in_place();
    int64_t dst = in_place ? off : free_take_best_fit(w);
    if (!in_place && dst < 0 && !deferred.empty()) {
      close_step();
      in_place = grow_in_place();
      dst = in_place ? off : free_take_best_fit(w);
    }
    if (!in_place && dst < 0 && grow_tail(w, n)) dst = free_take_best_fit(w);
    if (!in_place && dst < 0) {
      // The budget allows no more capacity: compact with every remaining
      // grow applied; the up-front budget check guarantees it fits.
      close_step();
      std::vector<int32_t> new_widths(widths_);
      for (size_t r = g; r < grows.size(); ++r) new_widths[grows[r].first] = grows[r].second;
      relayout(new_widths, total, std::max(capacity_, total), plan);
      return finish(plan);
    }
    step.push(old > 0 ? off : dst, dst, old, w);
    if (!in_place && old > 0) deferred.emplace_back(off, old);
    if (dst != off) id_order_ = false;
    set_row(id, dst, w);
    used_ += w - old;
  }
  close_step();
  compact_if_fragmented(plan);
  return finish(plan);
}

}  // namespace pyscall
