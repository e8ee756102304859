"""backend.start() hides TensorFlow's start-up notes and then leaves stderr alone.

Each test runs a child Python that calls ``backend.start()`` first. Most use a stand-in
``tensorflow`` package (``fake_tf``) whose import and device probe write notes, error lines
and ordinary lines to descriptor 2, as TensorFlow's C++ runtime does: a child then takes a
fraction of a second, and the lines are the same on every machine. Two tests start the real
TensorFlow, to check that its start-up notes on this machine are hidden and that, with oneDNN
on, a boolean transpose (a masked recurrent layer's) prints no oneDNN DT_BOOL line; a third
(``process``) checks that the same child without seqapp's start does print it.
"""

from __future__ import annotations

import os
import pty
import re
import select
import subprocess
import sys
import time
from pathlib import Path

import pytest

from seqapp import backend

NOTES = [  # seen on a CPU-only machine with TensorFlow 2.21, some with oneDNN on
    b"WARNING: All log messages before absl::InitializeLog() is called are written to STDERR\n",
    b"I0000 00:00:1795757017.019101    9492 port.cc:153] oneDNN custom operations are on. You may see "
    b"slightly different numerical results due to floating-point round-off errors.\n",
    b"I0000 00:00:1795756819.008282    3364 cudart_stub.cc:31] Could not find cuda drivers on your machine, "
    b"GPU will not be used.\n",
    b"I0000 00:00:1795756819.172886    3364 cpu_feature_guard.cc:227] This TensorFlow binary is optimized "
    b"to use available CPU instructions in performance-critical operations.\n",
    b"To enable the following instructions: AVX2 FMA, in other operations, rebuild TensorFlow with the "
    b"appropriate compiler flags.\n",
]
CUINIT = (b"E0000 00:00:1795756825.776528    3364 cuda_platform.cc:52] failed call to cuInit: INTERNAL: "
          b"CUDA error: Failed call to cuInit: UNKNOWN ERROR (303)\n")
GPU_ERROR = b"E0000 00:00:1795756825.776600    3364 gpu_device.cc:2344] could not open the GPU\n"
ONEDNN_ERROR = (b"E0000 00:00:1795616223.823751   21640 util.cc:131] oneDNN supports DT_BOOL only on platforms "
                b"with AVX-512. Falling back to the default Eigen-based implementation if present.\n")
# Any TensorFlow I/W log line or absl's preamble: none may reach the user after a plain start().
ANY_NOTE = re.compile(r"^([IW]\d{4} \d\d:\d\d:\d\d\.\d+ +\d+ |WARNING: All log messages before absl)", re.M)

FAKE_TF = f"""
import os, sys

def write(line):
    try:
        os.write(2, line)
    except OSError:  # like TensorFlow's C++ logging, never fail on a closed stderr
        pass

print("TF_CPP_MIN_LOG_LEVEL=" + str(os.environ.get("TF_CPP_MIN_LOG_LEVEL")), flush=True)
write({NOTES[0]!r})
write({NOTES[2]!r})
write(b"a C-level line that is not a note\\n")
try:
    print("a Python warning while importing", file=sys.stderr, flush=True)
except OSError:  # as Python's warnings module does
    pass
write({NOTES[1]!r})
write({NOTES[3]!r})
write({NOTES[4]!r})
write({GPU_ERROR!r})
if os.environ.get("FAKE_TF_FAIL"):
    write(b"the reason the import failed\\n")
    raise ImportError("fake TensorFlow failed")

class config:
    @staticmethod
    def list_physical_devices(kind=None):
        write({CUINIT!r})
        return []

# what backend.use_up_onednn_type_note() uses: running the graph writes oneDNN's DT_BOOL line
graph_ran = False
bool = "bool"
transpose = lambda tensor: tensor
class Graph:
    def as_default(self):
        import contextlib
        return contextlib.nullcontext()
class compat:
    class v1:
        placeholder = staticmethod(lambda dtype, shape: "mask")
        ConfigProto = staticmethod(lambda **kwargs: kwargs)
        class Session:
            def __init__(self, graph=None, config=None):
                assert config == {{"device_count": {{"GPU": 0}}}}
            def __enter__(self):
                return self
            def __exit__(self, *exc):
                return False
            def run(self, fetches, feed):
                globals()["graph_ran"] = True
                write({ONEDNN_ERROR!r})
"""
SHOWN = ["a C-level line that is not a note", "a Python warning while importing", GPU_ERROR.decode().strip()]


@pytest.fixture(scope="module")
def fake_tf(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder holding stand-in ``tensorflow`` and ``keras`` packages."""
    root = tmp_path_factory.mktemp("fake_tf")
    for name, text in (("tensorflow", FAKE_TF), ("keras", "")):
        (root / name).mkdir()
        (root / name / "__init__.py").write_text(text, encoding="utf-8")
    return root


def child_env(fake_tf: Path | None = None, **extra: str) -> dict:
    """The environment for a child: no inherited log settings, the fake TensorFlow first if given."""
    env = {key: value for key, value in os.environ.items()
           if key not in ("SEQAPP_TF_LOGS", "TF_CPP_MIN_LOG_LEVEL", "TF_ENABLE_ONEDNN_OPTS", "FAKE_TF_FAIL")}
    if fake_tf is not None:
        env["PYTHONPATH"] = os.pathsep.join([str(fake_tf), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    env.update(extra)
    return env


def child_code(body: str, nvidia: bool | None = False) -> str:
    """Python source that starts the backend, then runs ``body``; ``nvidia`` (unless None) fakes the GPU check."""
    fake = "" if nvidia is None else f"backend.has_nvidia_device = lambda: {nvidia}\n"
    return f"import os, sys\nfrom seqapp import backend\n{fake}backend.start()\n{body}"


def run_child(body: str, env: dict, nvidia: bool | None = False, **kwargs) -> subprocess.CompletedProcess:
    kwargs.setdefault("capture_output", True)
    return subprocess.run([sys.executable, "-c", child_code(body, nvidia)], env=env, timeout=60, **kwargs)


def lines(data: bytes) -> list[str]:
    return [line for line in data.decode().splitlines() if line.strip()]


def test_the_last_line_before_an_abort_reaches_the_parent(fake_tf, tmp_path):
    body = ("import resource\nresource.setrlimit(resource.RLIMIT_CORE, (0, 0))\n"
            "sys.stderr.write('last words from python\\n')\nos.write(2, b'last words from C')\nos.abort()\n")
    for _ in range(5):
        out = run_child(body, child_env(fake_tf), cwd=tmp_path)
        assert out.returncode == -6, out.stderr
        assert out.stderr.endswith(b"last words from python\nlast words from C"), out.stderr


def test_stdout_and_stderr_keep_their_order_in_one_pipe(fake_tf):
    body = ("print('begin', flush=True)\n"
            "for i in range(30):\n"
            "    print(f'out {i}', flush=True)\n"
            "    print(f'err {i}', file=sys.stderr, flush=True)\n"
            "    os.write(2, f'fd2 {i}\\n'.encode())\n")
    out = run_child(body, child_env(fake_tf), capture_output=False, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    assert out.returncode == 0
    merged = lines(out.stdout)
    expected = ["begin"] + [f"{kind} {i}" for i in range(30) for kind in ("out", "err", "fd2")]
    assert merged[merged.index("begin"):] == expected


def test_stderr_stays_a_terminal(fake_tf):
    body = "print(os.isatty(2), sys.stderr.isatty())\n"
    primary, secondary = pty.openpty()
    try:
        child = subprocess.Popen([sys.executable, "-c", child_code(body)], env=child_env(fake_tf),
                                 stdout=subprocess.PIPE, stderr=secondary)
        os.close(secondary)
        terminal = read_until_closed(primary, child)
        stdout = child.stdout.read()
        child.stdout.close()
    finally:
        os.close(primary)
    assert child.returncode == 0
    assert lines(stdout)[-1] == "True True"
    assert b"a C-level line that is not a note" in terminal  # the replay went to the terminal


def read_until_closed(primary: int, child: subprocess.Popen) -> bytes:
    """Everything the child writes to a pseudo-terminal, until it exits (at most 60 s)."""
    data, deadline = b"", time.monotonic() + 60
    while time.monotonic() < deadline:
        if select.select([primary], [], [], 0.2)[0]:
            try:
                chunk = os.read(primary, 65536)
            except OSError:  # EIO: the child's side is closed
                break
            if not chunk:
                break
            data += chunk
        elif child.poll() is not None:
            break
    child.wait(timeout=5)
    return data


def test_a_large_write_from_c_with_the_gil_held_completes(fake_tf):
    # TensorFlow logs from C++ while Python holds the GIL; PyDLL keeps the GIL during the call.
    body = ("import ctypes\nlibc = ctypes.PyDLL(None)\ndata = b'x' * (1 << 20)\nsent = 0\n"
            "while sent < len(data):\n"
            "    sent += libc.write(2, data[sent:], len(data) - sent)\n")
    out = run_child(body, child_env(fake_tf))
    assert out.returncode == 0
    assert out.stderr.endswith(b"x" * (1 << 20)) and out.stderr.count(b"x" * 1024) == 1024


@pytest.mark.process  # a real TensorFlow in a child process
def test_real_tensorflow_start_up_notes_are_hidden():
    out = run_child("print('ready', file=sys.stderr)\n", child_env(), nvidia=None)
    assert out.returncode == 0, out.stderr
    stderr = out.stderr.decode()
    assert not ANY_NOTE.search(stderr), stderr
    assert lines(out.stderr)[-1] == "ready"


def test_lines_written_during_the_capture_are_replayed_in_order(fake_tf):
    out = run_child("print('after start', file=sys.stderr)\n", child_env(fake_tf))
    assert out.returncode == 0
    assert lines(out.stderr) == SHOWN + ["after start"]
    assert lines(out.stdout) == ["TF_CPP_MIN_LOG_LEVEL=2"]


def test_on_a_gpu_machine_the_cuinit_failure_is_shown_and_the_cpu_fallback_said(fake_tf):
    out = run_child("", child_env(fake_tf), nvidia=True)
    assert out.returncode == 0
    shown = lines(out.stderr)
    assert shown[:-1] == SHOWN + [CUINIT.decode().strip()]
    assert shown[-1].startswith("seqapp: this machine has an NVIDIA GPU but TensorFlow found none")


def test_a_failed_import_still_shows_its_lines_and_restores_stderr(fake_tf):
    body = "print('unreachable')\n"
    code = child_code(body).replace("backend.start()\n", "try:\n    backend.start()\nexcept ImportError as error:\n"
                                    "    print('caught', error, file=sys.stderr)\n")
    out = subprocess.run([sys.executable, "-c", code], env=child_env(fake_tf, FAKE_TF_FAIL="1"),
                         capture_output=True, timeout=60)
    assert lines(out.stderr) == SHOWN + ["the reason the import failed", "caught fake TensorFlow failed"]


def test_a_closed_stderr_is_no_error(fake_tf):
    body = "try:\n    os.fstat(2)\nexcept OSError:\n    print('started; descriptor 2 still closed')\n"
    code = "import os\nos.close(2)\n" + child_code(body)
    out = subprocess.run([sys.executable, "-c", code], env=child_env(fake_tf), capture_output=True, timeout=60)
    assert out.returncode == 0
    assert lines(out.stdout)[-1] == "started; descriptor 2 still closed"


def test_seqapp_tf_logs_shows_everything(fake_tf):
    out = run_child("print(os.environ.get('TF_ENABLE_ONEDNN_OPTS'))\n", child_env(fake_tf, SEQAPP_TF_LOGS="1"))
    assert out.returncode == 0
    assert lines(out.stdout) == ["TF_CPP_MIN_LOG_LEVEL=None", "None"]  # TensorFlow's own levels
    shown = lines(out.stderr)
    assert [line.encode() + b"\n" for line in shown if not line.startswith(("a ", "E"))] == [
        NOTES[0], NOTES[2], NOTES[1], NOTES[3], NOTES[4]]
    assert CUINIT.decode().strip() in shown and GPU_ERROR.decode().strip() in shown


def test_replay_drops_only_the_notes_and_keeps_error_lines_byte_for_byte(capfdbinary):
    odd = b"ordinary \xff bytes\n"
    half = ONEDNN_ERROR.replace(b"DT_BOOL", b"DT_HALF")  # not provoked by seqapp: shown
    captured = b"".join([NOTES[0], b"first\n", NOTES[2], CUINIT, GPU_ERROR, odd, NOTES[3], NOTES[4],
                         ONEDNN_ERROR, half, b"W0000 00:00:1795611872.2 3443 other.cc:9] a warning\n",
                         b"no newline"])
    backend.replay(captured, hide_cuinit=True)
    kept = [b"first\n", GPU_ERROR, odd, half, b"W0000 00:00:1795611872.2 3443 other.cc:9] a warning\n",
            b"no newline"]
    assert capfdbinary.readouterr().err == b"".join(kept)
    backend.replay(captured, hide_cuinit=False)
    assert capfdbinary.readouterr().err == b"".join(kept[:1] + [CUINIT] + kept[1:])


# -- oneDNN's "supports DT_BOOL only on platforms with AVX-512" line ------------------------------

SKYLAKE_XEON = "fpu sse sse2 avx avx2 fma avx512f avx512dq avx512cd avx512bw avx512vl"  # AVX-512, no VNNI/BF16
CASCADE_LAKE_XEON = SKYLAKE_XEON + " avx512_vnni"
SAPPHIRE_RAPIDS_XEON = CASCADE_LAKE_XEON + " avx512_bf16 amx_bf16 amx_tile amx_int8"
EPYC_WITHOUT_AVX512 = "fpu sse sse2 avx avx2 fma vaes vpclmulqdq"  # this project's machine
ALDER_LAKE = "fpu sse sse2 avx avx2 fma avx_vnni"  # no AVX-512, but AVX-VNNI


def cpuinfo(flags: str) -> str:
    """/proc/cpuinfo of a two-core x86 CPU with ``flags``."""
    return "".join(f"processor\t: {core}\nvendor_id\t: GenuineIntel\nflags\t\t: {flags}\n\n" for core in (0, 1))


@pytest.mark.parametrize(("flags", "on"), [
    (SKYLAKE_XEON, False),  # AVX-512F alone: TensorFlow leaves oneDNN off, so the line never comes
    (CASCADE_LAKE_XEON, True),  # AVX-512F without BF16, the Xeon: oneDNN on, the line comes
    (SAPPHIRE_RAPIDS_XEON, True),  # BF16 and AMX do not stop it: no CPU feature is checked for DT_BOOL
    (EPYC_WITHOUT_AVX512, False),
    (ALDER_LAKE, True),
])
def test_the_onednn_decision_follows_tensorflows_default(flags, on):
    assert backend.onednn_opts_on(cpuinfo(flags), None, "Linux") is on


def test_an_exported_onednn_setting_wins_as_tensorflow_reads_it():
    for setting in ("1", "true", "TRUE", " 1 "):
        assert backend.onednn_opts_on(cpuinfo(EPYC_WITHOUT_AVX512), setting, "Linux") is True
    for setting in ("0", "false", "False"):
        assert backend.onednn_opts_on(cpuinfo(SAPPHIRE_RAPIDS_XEON), setting, "Linux") is False
    for setting in ("", "yes", "2"):  # not a boolean to TensorFlow: its default
        assert backend.onednn_opts_on(cpuinfo(CASCADE_LAKE_XEON), setting, "Linux") is True
        assert backend.onednn_opts_on(cpuinfo(SKYLAKE_XEON), setting, "Linux") is False


def test_the_onednn_decision_without_proc_cpuinfo_and_on_arm():
    assert backend.onednn_opts_on(None, None, "Windows") is True  # TensorFlow's default there
    assert backend.onednn_opts_on(None, None, "Darwin") is False
    neoverse_v1 = "processor\t: 0\nFeatures\t: fp asimd sve\nCPU implementer\t: 0x41\nCPU part\t: 0xd40\n"
    assert backend.onednn_opts_on(neoverse_v1, None, "Linux") is True
    assert backend.onednn_opts_on(neoverse_v1.replace("0xd40", "0xd0c"), None, "Linux") is False


GRAPH_RAN = ("import tensorflow\nsetting = os.environ.get('TF_ENABLE_ONEDNN_OPTS')\n"
             "print(f'graph ran: {tensorflow.graph_ran}; TF_ENABLE_ONEDNN_OPTS={setting}')\n")


def test_where_onednn_is_on_its_dt_bool_line_is_provoked_and_dropped_at_start(fake_tf):
    out = run_child(GRAPH_RAN, child_env(fake_tf, TF_ENABLE_ONEDNN_OPTS="1"))
    assert out.returncode == 0, out.stderr
    assert lines(out.stdout) == ["TF_CPP_MIN_LOG_LEVEL=2", "graph ran: True; TF_ENABLE_ONEDNN_OPTS=1"]
    assert lines(out.stderr) == SHOWN  # the line came inside the capture and was dropped


def test_seqapp_leaves_the_onednn_setting_alone(fake_tf):
    out = run_child(GRAPH_RAN, child_env(fake_tf, TF_ENABLE_ONEDNN_OPTS="0"))
    assert out.returncode == 0
    assert lines(out.stdout)[-1] == "graph ran: False; TF_ENABLE_ONEDNN_OPTS=0"  # off: nothing provoked
    out = run_child(GRAPH_RAN, child_env(fake_tf))
    assert out.returncode == 0
    assert lines(out.stdout)[-1].endswith("TF_ENABLE_ONEDNN_OPTS=None")  # TensorFlow's own default, on every CPU
    assert lines(out.stderr) == SHOWN


def test_a_failing_onednn_probe_does_not_stop_the_start(fake_tf, tmp_path):
    broken = tmp_path / "tensorflow"
    broken.mkdir()
    (broken / "__init__.py").write_text(FAKE_TF.replace("class Graph:", "class NoGraph:"), encoding="utf-8")
    env = child_env(fake_tf, TF_ENABLE_ONEDNN_OPTS="1")
    env["PYTHONPATH"] = os.pathsep.join([str(tmp_path), env["PYTHONPATH"]])
    out = run_child("print('started')\n", env)
    assert out.returncode == 0, out.stderr
    assert lines(out.stdout)[-1] == "started" and lines(out.stderr) == SHOWN


BOOL_TRANSPOSE = """
import tensorflow as tf
from tensorflow.python.util import _pywrap_util_port
print('oneDNN on:', _pywrap_util_port.IsMklEnabled(),
      backend.onednn_opts_on(backend.read_cpuinfo(), os.environ.get('TF_ENABLE_ONEDNN_OPTS'), 'Linux'))
step = tf.function(lambda mask: tf.transpose(tf.logical_not(mask)))  # as a masked recurrent layer does
print(step(tf.constant([[True, False, True]])).numpy().tolist())
print('ready', file=sys.stderr)
"""


@pytest.mark.process  # a real TensorFlow in a child process
def test_real_tensorflow_with_onednn_on_prints_no_dt_bool_line():
    out = run_child(BOOL_TRANSPOSE, child_env(TF_ENABLE_ONEDNN_OPTS="1"), nvidia=None)
    assert out.returncode == 0, out.stderr
    if "oneDNN on: True" not in out.stdout.decode():
        pytest.skip("this TensorFlow build has no oneDNN operations")
    assert lines(out.stdout)[-2:] == ["oneDNN on: True True", "[[False], [True], [False]]"]
    assert b"DT_BOOL" not in out.stderr, out.stderr
    assert lines(out.stderr)[-1] == "ready"


@pytest.mark.process
def test_real_tensorflow_prints_the_dt_bool_line_without_seqapps_start():
    # the control of the test above: the same graph, TensorFlow's own logs, the line comes
    out = run_child(BOOL_TRANSPOSE, child_env(TF_ENABLE_ONEDNN_OPTS="1", SEQAPP_TF_LOGS="1"), nvidia=None)
    assert out.returncode == 0, out.stderr
    if "oneDNN on: True" not in out.stdout.decode():
        pytest.skip("this TensorFlow build has no oneDNN operations")
    assert re.search(rb"^E\d{4} .* util\.cc:\d+\] oneDNN supports DT_BOOL only on platforms with AVX-512",
                     out.stderr, re.M), out.stderr
