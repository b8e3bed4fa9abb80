"""The compiled kernels (``bioplaus.native``): agreement with the PyTorch path, and every fallback."""

from __future__ import annotations

import copy
import math
import os
import stat

import pytest
import torch

from bioplaus import native
from bioplaus.errors import ConfigError
from bioplaus.native import bdett as native_bdett
from bioplaus.nets.spiking import SpikingLinear
from bioplaus.nets.thresholds import BDETT

needs_kernel = pytest.mark.skipif(native_bdett.library() is None, reason=f"no kernel: {native.status()}")


@pytest.fixture
def fresh_native(monkeypatch, tmp_path):
    """Kernels compiled into an empty cache folder, forgotten again afterwards."""
    monkeypatch.setenv("BIOPLAUS_CACHE_DIR", str(tmp_path / "cache"))
    native.clear()
    yield tmp_path / "cache"
    native.clear()


def _trajectory(shape: tuple[int, ...], steps: int, seed: int, scale: float = 2.0) -> list[torch.Tensor]:
    """Membrane potentials with resets, drifts and sign changes: ``V[0..steps]`` of one shape."""
    g = torch.Generator().manual_seed(seed)
    return [scale * (t % 3 + 1) * torch.randn(shape, generator=g) for t in range(steps)]


def _run(threshold: BDETT, vs: list[torch.Tensor], read_memory: bool = True) -> list[torch.Tensor]:
    """Θ at every step when ``threshold`` sees the potentials ``vs`` (``V[-1] = 0``), then P at every
    step (``read_memory``) or only after the last (the kernel then leaves each memory lazy)."""
    thetas, memories, v_prev = [], [], torch.zeros_like(vs[0])
    for v in vs:
        theta = threshold(v, v_prev)
        threshold.observe(v, theta, (v > theta).float())
        thetas.append(theta)
        if read_memory:
            memories.append(threshold.P)
        v_prev = v
    return thetas + (memories if read_memory else [threshold.P])


@needs_kernel
@pytest.mark.parametrize(
    ("shape", "options"),
    [
        ((100, 256), {}),
        ((7, 33), {"psi": 4.0}),
        ((3, 5, 40), {}),  # leading axes: statistics per (3, 5) sample
        ((64,), {}),  # one unbatched sample
        ((20, 30), {"stats": "batch"}),
        ((20, 30), {"max_exponent": 3.0, "eta": 0.05, "C": 2.0, "range_factor": 0.3, "p0": 0.2}),
    ],
)
def test_kernel_is_as_accurate_as_the_pytorch_path(shape, options):
    """Over a whole trajectory, the C kernel's Θ and P are as close to float64 as PyTorch's float32 path is.

    Both float32 paths round differently, and the recurrence (Θ's range feeds the next P) amplifies
    rounding where Θ is large, so the oracle is the float64 PyTorch path, not either float32 one.
    """
    vs = _trajectory(shape, 8, seed=sum(shape))
    for read_memory in (True, False):
        fast = _run(BDETT(backend="native", **options), vs, read_memory)
        eager = _run(BDETT(backend="torch", **options), vs, read_memory)
        exact = _run(BDETT(backend="torch", **options), [v.double() for v in vs], read_memory)
        for got, reference, truth in zip(fast, eager, exact, strict=True):
            assert got.dtype == torch.float32 and got.shape == truth.shape
            error, reference_error = (got.double() - truth).abs().max(), (reference.double() - truth).abs().max()
            assert error <= 2 * reference_error + 1e-6 * truth.abs().max().clamp(min=1.0)


@needs_kernel
def test_kernel_keeps_the_faithful_overflow():
    """A large hyperpolarising step overflows R to inf, and the next memory turns NaN, in both paths alike."""
    v_prev = torch.full((2, 8), 0.1)
    v_prev[0, 3] = 400.0  # ΔV = -400: e^{400/3} overflows float32
    v = torch.full((2, 8), 0.1)
    results = {}
    for backend in ("native", "torch"):
        th = BDETT(backend=backend)
        theta = th(v, v_prev)
        th.observe(v, theta, (v > theta).float())
        results[backend] = (theta, th.P)
    (theta, memory), (theta_ref, memory_ref) = results["native"], results["torch"]
    assert torch.isinf(theta[0, 3]) and torch.equal(torch.isinf(theta), torch.isinf(theta_ref))
    assert torch.equal(torch.isnan(memory), torch.isnan(memory_ref)) and torch.isnan(memory[0]).all()
    torch.testing.assert_close(memory[1], memory_ref[1])  # the other sample is untouched (per-sample stats)


@needs_kernel
def test_kernel_exp2_and_log1p_over_the_float_range():
    """The kernel's 2^x and ln(1+2^u) against float64 over [-150, 140], including the over- and underflow."""
    x = torch.linspace(-150.0, 140.0, 100_003)
    v = torch.zeros_like(x)
    lib = native_bdett.library()
    # k_rate = 1, v = 0, a = 2, b = 0, p0 = 0: at the first step Θ = 2^{v_prev}, i.e. 2^x itself
    unit = native_bdett.Params(k_rate=1.0, half_a=1.0, max_x=math.inf, range_factor=0.0, k_soft=1.0)
    theta, _ = native_bdett.step(lib, v, x, None, True, unit)
    exact = torch.exp2(x.double())
    normal = (exact < 3.4e38) & (exact > 1.18e-38)
    assert ((theta.double() - exact).abs() / exact)[normal].max() < 3e-7
    assert torch.equal(torch.isinf(theta), torch.isinf(torch.exp2(x)))
    assert (theta.double() - exact).abs()[exact <= 1.18e-38].max() <= 2**-148  # subnormals to 0 within an ulp
    # the memory with V_m = 0 and ½ (V_θ + b) = 0, k_soft = 1, η = 0: ½ ln(1 + 2^u)
    u = torch.linspace(-60.0, 60.0, 200_001)
    next_base = native_bdett.memory(lib, u, torch.zeros(1, 2), True, unit)
    softplus = torch.log1p(torch.exp2(u.double()))
    assert ((2 * next_base.double() - softplus).abs() / softplus.clamp(min=1e-30)).max() < 1e-6


def test_pytorch_path_for_tensors_the_kernel_does_not_take():
    """float64, non-contiguous and mismatched tensors go through PyTorch (bit-identical to backend='torch')."""
    base = torch.randn(6, 10, dtype=torch.float64)
    for v, v_prev in [(base, torch.zeros_like(base)), (base.float().t(), torch.zeros(10, 6))]:
        assert not native_bdett.accepts(v, v_prev, None)
        steps = []
        for th in (BDETT(), BDETT(backend="torch")):
            theta = th(v, v_prev)
            th.observe(v, theta, (v > theta).to(v.dtype))
            steps.append((theta, th.P, th(v, v)))
        assert all(torch.equal(a, b) for a, b in zip(*steps, strict=True))
    assert not native_bdett.accepts(torch.zeros(4), torch.zeros(5), None)
    assert not native_bdett.accepts(torch.zeros(()), torch.zeros(()), None)


@needs_kernel
@pytest.mark.parametrize("change", ["clone", "in_place"])
def test_observe_with_other_tensors_recomputes_the_memory(change):
    """observe() takes the kernel's memory only for the very V and Θ that forward() saw, unmodified."""
    v_prev, v = torch.zeros(4, 9), torch.randn(4, 9)
    memories = []
    for backend in ("native", "torch"):
        th = BDETT(backend=backend)
        theta = th(v, v_prev)
        if change == "in_place":
            theta.add_(1.0)  # Θ changed after forward(): the kernel's memory no longer applies
        th.observe(v, theta.clone() if change == "clone" else theta, theta)
        memories.append(th.P)
    torch.testing.assert_close(*memories, rtol=2e-6, atol=2e-6)


@needs_kernel
def test_memory_is_computed_only_when_needed_and_its_source_is_guarded():
    """After observe() the kernel keeps (V, statistics), not P; modifying that V in place is an error."""
    layer = SpikingLinear(5, 4, "bdett", backend="native")
    x = torch.rand(3, 5)
    with torch.no_grad():
        layer(x)
        assert layer.threshold._m.base is None and layer.threshold._m.lazy is not None
        assert layer.threshold.P.shape == (3, 4)  # computed on demand
        layer(x)
        layer.v.mul_(2.0)
        with pytest.raises(RuntimeError, match="modified in place"):
            layer(x)


@pytest.mark.parametrize("backend", ["auto", "torch"])
def test_growing_batch_without_reset_behaves_as_the_pytorch_path(backend):
    """A batch of another size at the next step takes the PyTorch path, which broadcasts P as before."""
    th = BDETT(backend=backend)
    v1 = torch.randn(1, 6)
    theta = th(v1, torch.zeros_like(v1))
    th.observe(v1, theta, theta)
    v2 = torch.randn(4, 6)
    reference = BDETT(backend="torch")
    reference.observe(v1, reference(v1, torch.zeros_like(v1)), theta)
    torch.testing.assert_close(th(v2, v2), reference(v2, v2), rtol=2e-6, atol=2e-6)


def test_disabled_by_environment(monkeypatch, fresh_native):
    """BIOPLAUS_NATIVE=0 switches the kernels off: auto falls back, native refuses with the reason."""
    monkeypatch.setenv("BIOPLAUS_NATIVE", "0")
    assert native_bdett.library() is None and "BIOPLAUS_NATIVE" in native.status()["bdett"]
    v = torch.randn(3, 5)
    torch.testing.assert_close(BDETT()(v, torch.zeros_like(v)), BDETT(backend="torch")(v, torch.zeros_like(v)))
    with pytest.raises(ConfigError, match="BIOPLAUS_NATIVE"):
        BDETT(backend="native")


def test_no_compiler(monkeypatch, fresh_native):
    """Without a C compiler the kernel is unavailable, the status says why, and BDETT still runs."""
    monkeypatch.setattr(native, "_compiler", lambda: None)
    assert native.load("bdett") is None
    assert "no C compiler" in native.status()["bdett"]
    v = torch.randn(3, 5)
    assert torch.isfinite(BDETT()(v, torch.zeros_like(v))).all()
    with pytest.raises(ConfigError, match="no C compiler"):
        BDETT(backend="native")


def test_unknown_backend():
    with pytest.raises(ConfigError, match="backend"):
        BDETT(backend="cuda")


@needs_kernel
def test_compiled_once_into_the_cache(fresh_native):
    """The first load compiles into the cache folder; a later process (here: after clear) reuses the file."""
    assert native.load("bdett") is not None
    built = sorted(fresh_native.glob("bdett-*"))
    assert len(built) == 2 and "compiled with" in native.status()["bdett"]  # the library and its hash
    stamp = built[0].stat().st_mtime_ns
    native.clear()
    assert native.load("bdett") is not None and built[0].stat().st_mtime_ns == stamp
    assert built[1].name == built[0].name + ".sha256"
    assert sorted(fresh_native.glob("*")) == built  # no scratch files left behind


@needs_kernel
def test_unwritable_cache_falls_back_to_the_temporary_folder(monkeypatch, tmp_path):
    blocker = tmp_path / "not_a_folder"
    blocker.write_text("a file where the cache folder should be")
    monkeypatch.setenv("BIOPLAUS_CACHE_DIR", str(blocker / "cache"))
    monkeypatch.setattr(native.tempfile, "gettempdir", lambda: str(tmp_path / "tmp"))
    native.clear()
    try:
        assert native.load("bdett") is not None
        assert list((tmp_path / "tmp").glob("bioplaus-*/bdett-*"))
    finally:
        native.clear()


@needs_kernel
def test_layers_with_the_kernel_copy_and_train():
    """A mid-trajectory layer deep-copies (as TD3 copies its actor), and gradients match the PyTorch path."""
    torch.manual_seed(0)
    x = torch.rand(4, 6)
    grads = {}
    for backend in ("native", "torch"):
        torch.manual_seed(1)
        layer = SpikingLinear(6, 5, "bdett", backend=backend)
        layer.linear.weight.data.mul_(3.0)
        with torch.no_grad():  # mid-trajectory state, with the kernel's pending memory, copies
            layer(x)
            twin = copy.deepcopy(layer)
            torch.testing.assert_close(twin(x), layer(x))
        layer.reset()
        out = sum(layer(x) for _ in range(3))
        out.sum().backward()
        grads[backend] = layer.linear.weight.grad
    assert grads["native"].abs().sum() > 0
    torch.testing.assert_close(grads["native"], grads["torch"])


def test_a_machine_with_a_compiler_gets_the_kernel():
    """Where a C compiler exists, the kernel must build (else the tests above would silently skip)."""
    if native._compiler() is None or not native.enabled():
        pytest.skip("no C compiler on this machine, or kernels disabled")
    assert native_bdett.library() is not None, native.status()


def test_operators_without_a_cxx_compiler(monkeypatch, fresh_native):
    """Without a C++ compiler an operator library is unavailable and the status says why (SAB's steps then take the
    Python autograd node over the same C kernel)."""
    monkeypatch.setattr(native, "_cxx_compiler", lambda: None)
    assert native.load_op("no_such_operator", ("sab",)) is False
    assert "no C and C++ compilers" in native.status()["no_such_operator"]
    monkeypatch.setenv("BIOPLAUS_NATIVE", "0")
    native.clear()
    assert native.load_op("no_such_operator", ("sab",)) is False
    assert "BIOPLAUS_NATIVE" in native.status()["no_such_operator"]


def test_an_operator_that_does_not_build_is_reported(monkeypatch, fresh_native, tmp_path):
    """A build that fails leaves the operator unavailable with the compiler's complaint, not an exception."""
    if native._compiler() is None or native._cxx_compiler() is None:
        pytest.skip("no C and C++ compilers")
    sources = tmp_path / "sources"
    sources.mkdir()
    (sources / "kernel.c").write_text("int kernel(void) { return 0; }\n")
    (sources / "broken.cpp").write_text("this is not C++\n")
    monkeypatch.setattr(native, "SOURCE_DIR", sources)
    assert native.load_op("broken", ("kernel",)) is False
    assert "failed" in native.status()["broken"] and "broken.cpp" in native.status()["broken"]
    assert native.load_op("missing", ("kernel",)) is False  # no source at all
    assert "unavailable" in native.status()["missing"]


def _planted(folder, mode: int) -> None:
    """A folder holding a 'library' someone else could have written, with the given mode."""
    folder.mkdir(parents=True)
    (folder / "bdett-planted.so").write_bytes(b"not ours")
    folder.chmod(mode)


def test_a_new_cache_folder_is_private(fresh_native):
    """The cache folder is created with mode 0700 whatever the umask."""
    old = os.umask(0o002)
    try:
        native._private_folder(fresh_native)
    finally:
        os.umask(old)
    assert stat.S_IMODE(fresh_native.stat().st_mode) == 0o700


@pytest.mark.skipif(os.name == "nt", reason="POSIX owners and modes")
def test_a_folder_others_may_write_is_refused(monkeypatch, fresh_native, tmp_path):
    """A world- or group-writable cache folder (as a planted /tmp folder would be) is refused with a clear
    warning and never loaded from: with no other folder, the kernel is unavailable and the status says why."""
    _planted(fresh_native, 0o777)
    monkeypatch.setattr(native, "_folders", lambda: [fresh_native])
    loads = []
    monkeypatch.setattr(native.ctypes, "CDLL", lambda path: loads.append(path))
    with pytest.warns(RuntimeWarning, match="refusing the kernel cache folder .*writable by group or others"):
        assert native.load("bdett") is None
    assert loads == [] and "chmod 700" in native.status()["bdett"]
    with pytest.raises(ConfigError, match="refusing the kernel cache folder"):
        native._private_folder(fresh_native)
    fresh_native.chmod(0o770)
    with pytest.raises(ConfigError, match="mode 770"):
        native._private_folder(fresh_native)


@pytest.mark.skipif(os.name == "nt", reason="POSIX owners and modes")
def test_a_folder_another_user_owns_is_refused(monkeypatch, fresh_native):
    _planted(fresh_native, 0o700)
    monkeypatch.setattr(native.os, "getuid", lambda: fresh_native.stat().st_uid + 1)
    with pytest.raises(ConfigError, match="owned by user id .* not by you"):
        native._private_folder(fresh_native)


@needs_kernel
@pytest.mark.parametrize("damage", ["truncate", "hash"])
def test_a_damaged_library_is_rebuilt(fresh_native, damage):
    """A library cut short (it would crash every use with a bus error) or one whose stored hash does not match
    is rebuilt, not loaded."""
    assert native.load("bdett") is not None
    (library,) = fresh_native.glob("bdett-*.so")
    digest = native._hash_file(library)
    assert digest.read_text().strip() == native._digest(library)
    whole = library.read_bytes()
    if damage == "truncate":
        library.write_bytes(whole[: len(whole) // 3])
    else:
        digest.write_text("0" * 64 + "\n")
    native.clear()
    assert native.load("bdett") is not None
    assert library.read_bytes() == whole and digest.read_text().strip() == native._digest(library)
