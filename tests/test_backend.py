"""backend.start() hides TensorFlow's start-up notes and then leaves stderr alone.

Each test runs a child Python that calls ``backend.start()`` first. Most use a stand-in
``tensorflow`` package (``fake_tf``) whose import and device probe write notes, error lines
and ordinary lines to descriptor 2, as TensorFlow's C++ runtime does: a child then takes a
fraction of a second, and the lines are the same on every machine. One test starts the real
TensorFlow to check that its notes on this machine are hidden.
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
    captured = b"".join([NOTES[0], b"first\n", NOTES[2], CUINIT, GPU_ERROR, odd, NOTES[3], NOTES[4],
                         ONEDNN_ERROR, b"W0000 00:00:1795611872.2 3443 other.cc:9] a warning\n", b"no newline"])
    backend.replay(captured, hide_cuinit=True)
    kept = [b"first\n", GPU_ERROR, odd, ONEDNN_ERROR, b"W0000 00:00:1795611872.2 3443 other.cc:9] a warning\n",
            b"no newline"]
    assert capfdbinary.readouterr().err == b"".join(kept)
    backend.replay(captured, hide_cuinit=False)
    assert capfdbinary.readouterr().err == b"".join(kept[:1] + [CUINIT] + kept[1:])
