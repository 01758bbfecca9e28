"""Ragged checkpoints, pickling and copies, drop-in optimizer alignment across layout changes, and torch.compile."""
import copy
import io

import pytest
import torch

import pyscall

N, D = 40, 8


def _widths(seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, D + 1, (N,), generator=g, dtype=torch.int32)


def _mask(widths):
    return torch.arange(D)[None, :] < widths[:, None].to(torch.int64)


@pytest.mark.parametrize("optimizer", [None, "adam", "rowwise_adagrad"])
def test_state_dict_roundtrip_is_ragged_and_loads_into_any_budget_that_fits(optimizer):
    torch.manual_seed(0)
    src = pyscall.Embedding(N, D, widths=_widths(), optimizer=optimizer, lr=0.1)
    if optimizer:
        src(torch.randint(0, N, (30,))).sum().backward()  # non-trivial optimizer state
    sd = src.state_dict()
    total = int(src.widths.sum())
    assert sd["values"].numel() == total  # compact: no n x d_max padding, no free space
    buf = io.BytesIO()
    torch.save(sd, buf)
    buf.seek(0)
    loaded = torch.load(buf, weights_only=True)
    used = src.memory_stats()["used_bytes"] + src.memory_stats()["row_metadata_bytes"]  # the least budget it fits
    dst = pyscall.Embedding(N, D, widths=torch.zeros(N, dtype=torch.int32), optimizer=optimizer, lr=0.1,
                            budget_bytes=used)
    dst.load_state_dict(loaded)
    assert torch.equal(dst.widths, src.widths) and torch.equal(dst.to_dense(), src.to_dense())
    assert dst.state_dict()["values"].equal(sd["values"])
    for key in sd:
        assert torch.equal(dst.state_dict()[key], sd[key]), key
    tiny = pyscall.Embedding(N, D, widths=torch.zeros(N, dtype=torch.int32), optimizer=optimizer,
                             budget_bytes=used - 1)
    before = tiny.to_dense()
    with pytest.raises(pyscall.BudgetExceededError):
        tiny.load_state_dict(loaded)
    assert torch.equal(tiny.to_dense(), before) and tiny.num_embeddings == N
    # A corrupted checkpoint: the error names what is wrong, and nothing changes.
    for key, value, match in [("widths", sd["widths"] + D, r"widths must lie in \[0, d_max=8\]"),
                              ("values", sd["values"][:-1], "values must be a 1-D tensor")]:
        with pytest.raises(ValueError, match=match):
            dst.load_state_dict({**sd, key: value})
        for k in sd:
            assert torch.equal(dst.state_dict()[k], sd[k]), k


def test_state_dict_nested_in_a_model():
    model = torch.nn.Sequential(pyscall.Embedding(N, D, widths=_widths(1)), torch.nn.Linear(D, 2))
    sd = model.state_dict()
    assert {"0.widths", "0.values", "1.weight", "1.bias"} <= set(sd)
    other = torch.nn.Sequential(pyscall.Embedding(N, D), torch.nn.Linear(D, 2))
    other.load_state_dict(sd)
    assert torch.equal(other[0].to_dense(), model[0].to_dense())


@pytest.mark.parametrize("make_opt", [
    lambda p: torch.optim.SGD(p, lr=0.1, momentum=0.9),
    lambda p: torch.optim.Adagrad(p, lr=0.1),
    lambda p: torch.optim.Adam(p, lr=0.1),
    lambda p: torch.optim.AdamW(p, lr=0.1),
], ids=["sgd_momentum", "adagrad", "adam", "adamw"])
def test_dropin_resize_keeps_torch_optimizer_state_aligned(make_opt):
    torch.manual_seed(2)
    emb = pyscall.Embedding(N, D, widths=_widths(2))
    opt = make_opt(emb.parameters())
    for _ in range(2):
        opt.zero_grad()
        emb(torch.randint(0, N, (25,))).pow(2).sum().backward()
        opt.step()

    def state_rows():
        a = emb._arena
        index = a.offsets[:, None] + torch.arange(D)[None, :]
        index = index.clamp_max(emb.weight.numel() - 1)
        return {k: torch.where(_mask(a.widths), v[index], 0.0)
                for k, v in opt.state[emb.weight].items() if v.shape == emb.weight.shape}

    before = state_rows()
    old_widths = emb.widths
    ids = torch.arange(0, N, 3)
    new = torch.randint(0, D + 1, (len(ids),), dtype=torch.int32)
    emb.resize(ids, new, optimizer=opt)
    emb.append(torch.tensor([D, 3], dtype=torch.int32), optimizer=opt)
    emb.compact(optimizer=opt)
    after = state_rows()
    keep = torch.minimum(old_widths, emb.widths[:N])
    for k in before:
        kept = _mask(keep)
        assert torch.equal(after[k][:N][kept], before[k][kept]), k
        assert torch.all(after[k][:N][~kept] == 0) and torch.all(after[k][N:] == 0), k
    opt.zero_grad()
    emb(torch.randint(0, N + 2, (25,))).pow(2).sum().backward()
    opt.step()  # shapes and layout agree: no error


def test_dropin_layout_change_without_optimizer_is_refused_at_step():
    emb = pyscall.Embedding(N, D, widths=_widths(3))
    opt = torch.optim.Adam(emb.parameters(), lr=0.1)
    emb(torch.arange(5)).sum().backward()
    opt.step()
    emb.resize(torch.tensor([1]), torch.tensor([D], dtype=torch.int32))  # opt not passed
    opt.zero_grad()
    emb(torch.arange(5)).sum().backward()
    with pytest.raises(RuntimeError, match="optimizer=opt"):
        opt.step()


def _train(emb, opt, steps, seed):
    g = torch.Generator().manual_seed(seed)
    for _ in range(steps):
        ids = torch.randint(0, emb.num_embeddings, (25,), generator=g)
        emb(ids).pow(2).sum().backward()
        if opt is not None:
            opt.step()
            opt.zero_grad()


@pytest.mark.parametrize("optimizer", ["adam", None])
def test_deepcopy_keeps_the_layout_and_trains_like_the_original(optimizer):
    # copy.deepcopy((table, torch optimizer)): values, layout, fused state and the torch optimizer's state
    # come back aligned; training and re-laying out the copy leave the original alone.
    torch.manual_seed(9)
    emb = pyscall.Embedding(N, D, widths=_widths(9), optimizer=optimizer, lr=0.05)
    opt = torch.optim.Adam(emb.parameters(), lr=0.05) if optimizer is None else None
    _train(emb, opt, 2, seed=1)
    emb.resize(torch.tensor([0, 5, 9]), torch.tensor([D, 0, 2]), optimizer=opt)  # free space inside
    copy_emb, copy_opt = copy.deepcopy((emb, opt))
    assert torch.equal(copy_emb._arena.offsets, emb._arena.offsets)
    assert copy_emb.memory_stats()["free_extents"] == emb.memory_stats()["free_extents"] > 0
    original = emb.state_dict()

    def go_on(table, optimizer):
        _train(table, optimizer, 2, seed=2)
        table.resize(torch.tensor([1, 2]), torch.tensor([D, 1]), optimizer=optimizer)
        torch.manual_seed(4)  # the appended row's init
        table.append(torch.tensor([3]), optimizer=optimizer)
        _train(table, optimizer, 1, seed=3)  # a torch optimizer's step checks its state is aligned

    go_on(copy_emb, copy_opt)
    for key, value in emb.state_dict().items():
        assert torch.equal(value, original[key]), key
    go_on(emb, opt)  # the same steps on the original give the same table
    for key, value in emb.state_dict().items():
        assert torch.equal(value, copy_emb.state_dict()[key]), key


def test_a_pickled_module_trains_on():
    torch.manual_seed(10)
    model = torch.nn.ModuleDict({"bag": pyscall.EmbeddingBag(N, D, mode="sum", widths=_widths(10),
                                                             optimizer="rowwise_adagrad")})
    model["bag"](torch.randint(0, N, (12,)), torch.tensor([0, 5])).sum().backward()
    buffer = io.BytesIO()
    torch.save(model, buffer)  # the whole module, pickled
    buffer.seek(0)
    loaded = torch.load(buffer, weights_only=False)
    for key, value in model.state_dict().items():
        assert torch.equal(loaded.state_dict()[key], value), key
    ids, offsets = torch.randint(0, N, (12,)), torch.tensor([0, 7])
    for m in (model, loaded):
        m["bag"](ids, offsets).sum().backward()
        m["bag"].release(ids[:2])
        m["bag"].compact()
    for key, value in model.state_dict().items():
        assert torch.equal(loaded.state_dict()[key], value), key
    loaded["bag"]._arena._arena.validate()


@pytest.mark.parametrize("optimizer", ["adam", "rowwise_adagrad"])
def test_module_to_moves_the_arena_and_refuses_a_new_dtype(optimizer):
    # Module.to / share_memory reach the fused state and the row metadata, which are not registered
    # buffers; a dtype change is refused (budget_bytes counts the dtype's bytes) and changes nothing.
    emb = pyscall.Embedding(N, D, widths=_widths(11), optimizer=optimizer)
    before = emb.state_dict()
    with pytest.raises(TypeError, match="keeps the dtype"):
        emb.double()
    for key, value in emb.state_dict().items():
        assert value.dtype == before[key].dtype and torch.equal(value, before[key]), key
    emb(torch.tensor([1, 2])).sum().backward()  # still trains
    emb.share_memory()
    a = emb._arena
    assert all(t.is_shared() for t in [emb.weight, *a.state, *a.row_state])
    emb.to("meta")  # a device move without a GPU: everything the kernels read follows the weight
    assert {t.device.type for t in [emb.weight, *a.state, *a.row_state, a.offsets, a.widths]} == {"meta"}


@pytest.mark.parametrize("optimizer", [None, "adam"])
def test_torch_compile_fullgraph_matches_eager(optimizer):
    class Model(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.users = pyscall.Embedding(N, D, widths=_widths(4), optimizer=optimizer, lr=0.05)
            self.items = pyscall.EmbeddingBag(N, D, mode="mean", widths=_widths(5), optimizer=optimizer, lr=0.05)

        def forward(self, users, items, offsets):
            return (self.users(users) * self.items(items, offsets)).sum(1)

    results = []
    for compiled in (False, True):
        torch.manual_seed(6)
        model = Model()
        opt = torch.optim.SGD(model.parameters(), lr=0.05) if optimizer is None else None
        run = torch.compile(model, fullgraph=True) if compiled else model
        g = torch.Generator().manual_seed(7)
        outs = []
        for _ in range(3):
            users = torch.randint(0, N, (6,), generator=g)
            items = torch.randint(0, N, (15,), generator=g)
            offsets = torch.tensor([0, 2, 2, 6, 9, 12])
            out = run(users, items, offsets)
            out.pow(2).sum().backward()
            if opt:
                opt.step()
                opt.zero_grad()
            outs.append(out.detach())
        results.append((torch.stack(outs), model.users.to_dense(), model.items.to_dense()))
    for eager, compiled in zip(*results):
        torch.testing.assert_close(compiled, eager, rtol=1e-5, atol=1e-6)


def test_torch_compile_follows_a_layout_change_off_and_back_onto_the_uniform_path():
    # The compiled graph passes the arena's uniform_width to the kernels as a constant: a layout change must
    # reach it (a stale width would read every row at the wrong offset).
    emb = pyscall.Embedding(N, D, optimizer="sgd", lr=0.1)
    lookup = torch.compile(lambda ids: emb(ids), fullgraph=True)
    ids = torch.tensor([1, 5, 7, 5, N - 1])
    for change in (lambda: None, lambda: emb.set_widths(_widths(12)), lambda: emb.set_widths(torch.full((N,), 4))):
        change()
        dense = emb.to_dense()
        out = lookup(ids)
        torch.testing.assert_close(out.detach(), dense[ids], rtol=0, atol=0)
        out.sum().backward()
        step = torch.zeros(N, D).index_add_(0, ids, torch.ones(len(ids), D))
        within = torch.arange(D) < emb.widths[:, None]
        torch.testing.assert_close(emb.to_dense(), torch.where(within, dense - 0.1 * step, 0.0))
    assert emb._arena.uniform_width == 4


def test_fused_backward_marks_the_table_modified_in_eager_mode():
    # Eager calls skip the custom op's dispatch but must keep its mutation semantics: a graph that saved the
    # table before a fused update must not backpropagate through stale rows. The lookup is recorded after
    # the op that saved the weight, so its backward (and update) runs first.
    emb = pyscall.Embedding(N, D, optimizer="sgd", lr=0.1)
    penalty = emb.weight.pow(2).sum()
    with pytest.raises(RuntimeError, match="modified by an inplace operation"):
        (penalty + emb(torch.arange(4)).sum()).backward()


@pytest.mark.parametrize("compiled", [False, True])
def test_two_lookups_of_a_fused_table_in_one_graph_each_apply_their_update(compiled):
    # Positive and negative items from one table: each lookup's backward applies its own update (as FBGEMM's
    # fused TBE does). With SGD that is torch's step on the summed gradient; the step count advances by two.
    torch.manual_seed(3)
    ours = pyscall.Embedding(N, D, widths=_widths(10), optimizer="sgd", lr=0.1)
    bag = pyscall.EmbeddingBag(N, D, mode="mean", widths=_widths(11), optimizer="sgd", lr=0.1)
    ref = pyscall.Embedding(N, D, widths=_widths(10))
    ref_bag = pyscall.EmbeddingBag(N, D, mode="mean", widths=_widths(11))
    ref.load_state_dict(ours.state_dict(), strict=False)
    ref_bag.load_state_dict(bag.state_dict(), strict=False)
    opt = torch.optim.SGD([ref.weight, ref_bag.weight], lr=0.1)
    pos, neg = torch.tensor([1, 2, 2, 5]), torch.tensor([2, 7, 1, 1])
    offsets = torch.tensor([0, 1, 3])

    def loss(emb, bag, pos, neg):
        return (emb(pos) * emb(neg)).sum() + (bag(pos, offsets) - bag(neg, offsets)).pow(2).sum()

    run = torch.compile(loss, fullgraph=True) if compiled else loss
    for _ in range(2):
        run(ours, bag, pos, neg).backward()
        loss(ref, ref_bag, pos, neg).backward()
        opt.step()
        opt.zero_grad()
    assert ours.step == bag.step == 4
    torch.testing.assert_close(ours.to_dense(), ref.to_dense(), rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(bag.to_dense(), ref_bag.to_dense(), rtol=1e-5, atol=1e-6)


def test_two_lookups_of_a_fused_adam_table_compile_to_the_eager_order():
    # With Adam the order of the two steps matters (bias correction); compiled backward must keep eager's.
    results = []
    for compiled in (False, True):
        torch.manual_seed(4)
        emb = pyscall.Embedding(N, D, widths=_widths(12), optimizer="adam", lr=0.1)
        bag = pyscall.EmbeddingBag(N, D, mode="sum", widths=_widths(13), optimizer="adam", lr=0.1)
        offsets = torch.tensor([0, 2])

        def loss(pos, neg):
            return (emb(pos) * emb(neg)).sum() + (bag(pos, offsets) - bag(neg, offsets)).pow(2).sum()

        run = torch.compile(loss, fullgraph=True) if compiled else loss
        for _ in range(3):
            run(torch.tensor([1, 2, 3]), torch.tensor([2, 3, 4])).backward()
        results.append((emb.to_dense(), bag.to_dense()))
    for eager, compiled in zip(*results):
        torch.testing.assert_close(compiled, eager, rtol=1e-6, atol=1e-7)


def test_two_weighted_lookups_of_a_fused_bag_need_no_rows_unless_the_weights_take_a_gradient():
    bag = pyscall.EmbeddingBag(N, D, mode="sum", optimizer="adam", lr=0.1)
    ids, offsets = torch.tensor([1, 2, 3]), torch.tensor([0, 1])

    def loss(first, second):
        return (bag(ids, offsets, per_sample_weights=first) * bag(ids, offsets, per_sample_weights=second)).sum()

    loss(torch.rand(3), torch.rand(3)).backward()
    assert bag.step == 2
    # The gradient of per_sample_weights reads the rows as the forward saw them; the other lookup's update,
    # run first, changed them, so backward refuses and says why.
    with pytest.raises(RuntimeError, match="per_sample_weights reads the rows as this forward saw them"):
        loss(torch.rand(3, requires_grad=True), torch.rand(3)).backward()


@pytest.mark.parametrize("optimizer", [None, "adam"])
def test_inference_path_equals_the_training_path(optimizer):
    # Without autograd the modules call the forward bodies directly (no graph): same values, no grad_fn.
    emb = pyscall.Embedding(N, D, widths=_widths(8), optimizer=optimizer)
    bag = pyscall.EmbeddingBag(N, D, mode="sum", widths=_widths(9), optimizer=optimizer)
    ids, offsets = torch.randint(0, N, (12,)), torch.tensor([0, 3, 3, 7])
    psw = torch.rand(12)
    trained = (emb(ids), bag(ids, offsets), bag(ids, offsets, per_sample_weights=psw))
    with torch.no_grad():
        inferred = (emb(ids), bag(ids, offsets), bag(ids, offsets, per_sample_weights=psw))
    for t, i in zip(trained, inferred):
        assert t.grad_fn is not None and i.grad_fn is None
        torch.testing.assert_close(i, t, rtol=0, atol=0)


@pytest.mark.parametrize("bag", [False, True])
@pytest.mark.parametrize("optimizer", [None, "adam"])
@pytest.mark.parametrize("change", ["append", "resize", "set_widths", "compact", "load_state_dict"])
def test_layout_change_between_forward_and_backward_is_refused(bag, optimizer, change):
    # The saved offsets/widths may alias metadata the change freed (the backward once read garbage offsets):
    # the backward must raise and leave values and optimizer state as the change left them.
    cls = pyscall.EmbeddingBag if bag else pyscall.Embedding
    emb = cls(N, D, widths=_widths(3), optimizer=optimizer, lr=0.1, **({"mode": "sum"} if bag else {}))
    ids = torch.randint(0, N, (10,))
    out = emb(ids, torch.tensor([0, 4])) if bag else emb(ids)
    if change == "append":
        emb.append(torch.full((500,), D))
    elif change == "resize":
        emb.resize(ids[:3], torch.tensor([1, 2, 3]))
    elif change == "set_widths":
        emb.set_widths(torch.full((N,), 2))
    elif change == "compact":
        emb.release(ids[:2])
        emb.compact()
    else:
        emb.load_state_dict(cls(N, D, widths=_widths(4), optimizer=optimizer, **({"mode": "sum"} if bag else {})).state_dict())
    after = emb.state_dict()
    with pytest.raises(RuntimeError, match="row layout changed"):
        out.sum().backward()
    for key, value in emb.state_dict().items():
        assert torch.equal(value, after[key]), key
    assert emb.weight.grad is None
