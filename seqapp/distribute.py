"""Training on several replicas: which ``tf.distribute`` strategy, and a loop for the one
where ``keras.Model.fit`` fails.

``train.distribute`` picks the strategy (:func:`resolve`): ``mirrored`` (one host, several
GPUs) trains with ``model.fit``; ``multi_worker`` (several processes, each given
``TF_CONFIG``) cannot, because ``fit`` under ``MultiWorkerMirroredStrategy`` fails in
Keras 3 (keras-team/keras#20585: "Attempt to convert a value (PerReplica...)"). For it
:func:`fit_custom` runs seqapp's own distributed step and drives the same Keras callbacks
(``on_epoch_begin/end``, ``on_train_batch_end``, the logs dict, ``model.stop_training``),
so early stopping, checkpoints and history stay in :class:`seqapp.checkpoint.Checkpointer`.

``train.batch_size`` is per replica; a step sees ``batch_size x replicas`` examples. The
learning rate is not scaled: the loss is the mean over the global batch, exactly as a
single process with that batch size would compute it.

A multi-worker start is bounded and interruptible (:func:`multi_worker_strategy`): each
worker holds its own port, then waits for every other worker's port to answer, in Python,
for at most ``train.peer_wait_s``, before TensorFlow's set-up (which would wait in C++ for
good, deaf to Ctrl-C). A :class:`Watchdog` thread ends the process a few seconds after
SIGINT or SIGTERM if the main thread is stuck in TensorFlow by then (a collective waiting
for a worker that is gone).
"""

from __future__ import annotations

import atexit
import contextlib
import errno
import json
import logging
import os
import signal
import socket
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from seqapp.errors import Interrupted, SeqappError

MODES = ("auto", "none", "mirrored", "multi_worker")
POLL_S = 0.5  # how often a missing worker's port is tried again
FIRST_NOTE_S, NOTE_EVERY_S = 5.0, 10.0  # the first "waiting for" line, then one every NOTE_EVERY_S
GRACE_S = 2.0  # after SIGINT or SIGTERM, how long the main thread has to end the process itself
SAVE_GRACE_S = 30.0  # the same while an epoch's training state is being written
REGISTER_MIN_S = 60.0  # the least time TensorFlow's set-up gives a worker to register, once all were seen
PEER_JOBS = ("chief", "worker")  # the jobs of TF_CONFIG a multi-worker training trains with

logger = logging.getLogger("seqapp")


def cluster(tf_config: str | None) -> tuple[int, int]:
    """(number of workers, this worker's index) from a ``TF_CONFIG`` value; (1, 0) when unset."""
    if not tf_config:
        return 1, 0
    try:
        parsed = json.loads(tf_config)
        spec, task = parsed.get("cluster", {}), parsed.get("task", {})
        workers = len(spec.get("chief", [])) + len(spec.get("worker", []))
        index = int(task.get("index", 0)) + (len(spec.get("chief", [])) if task.get("type") == "worker" else 0)
    except (ValueError, AttributeError, TypeError) as exc:
        raise SeqappError(f"TF_CONFIG is not valid ({exc}); give JSON like "
                          '{"cluster": {"worker": ["host:port", ...]}, "task": {"type": "worker", "index": 0}}') \
            from None
    if workers < 1 or not 0 <= index < workers:
        raise SeqappError(f"TF_CONFIG names {workers} worker(s) but this task's index is {index}; fix TF_CONFIG")
    return workers, index


def resolve(mode: str, tf_config: str | None, gpus: int) -> str:
    """The strategy ``auto`` stands for: multi_worker when TF_CONFIG names more than one
    worker, mirrored when more than one GPU is visible, else none; other modes as given."""
    if mode != "auto":
        return mode
    if cluster(tf_config)[0] > 1:
        return "multi_worker"
    return "mirrored" if gpus > 1 else "none"


@dataclass(frozen=True)
class Peer:
    """One worker of a cluster: its index (0: the chief, as in :func:`cluster`) and ``host:port``."""

    index: int
    host: str
    port: int

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"


def members(tf_config: str) -> tuple[list[Peer], int]:
    """Every worker a ``TF_CONFIG`` names, the chief first (the order of :func:`cluster`'s
    indexes), and this worker's index among them."""
    _, index = cluster(tf_config)
    spec = json.loads(tf_config)["cluster"]
    addresses = [*spec.get("chief", []), *spec.get("worker", [])]
    return [Peer(i, *split_address(address, i)) for i, address in enumerate(addresses)], index


def split_address(address: Any, index: int) -> tuple[str, int]:
    """(host, port) of a ``TF_CONFIG`` entry such as ``a:23456`` or ``[::1]:23456``."""
    host, colon, port = address.rpartition(":") if isinstance(address, str) else ("", "", "")
    host = host[1:-1] if host.startswith("[") and host.endswith("]") else host
    if not colon or not host or not (port.isascii() and port.isdigit()) or not 0 < int(port) < 65536:
        raise SeqappError(f"TF_CONFIG names {json.dumps(address)} for worker {index}; give every worker as "
                          "host:port, e.g. 'a:23456'")
    return host, int(port)


def knock(host: str, port: int, timeout: float) -> str | None:
    """None when something accepts connections at ``host:port``, else why not ("connection
    refused", "timed out", an unknown host's resolver message)."""
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return None
    except OSError as exc:  # socket.gaierror and TimeoutError included
        reason = exc.strerror or str(exc) or type(exc).__name__
        return reason[:1].lower() + reason[1:]


def wait_for_peers(peers: list[Peer], wait_s: float, say: Callable[[str], None],
                   probe: Callable[[str, int, float], str | None] = knock,
                   clock: Callable[[], float] = time.monotonic, sleep: Callable[[float], None] = time.sleep) -> None:
    """Return once every worker in ``peers`` accepts connections on its port; after ``wait_s``
    seconds raise one line naming those that never did.

    Python, not TensorFlow, waits here, so Ctrl-C and SIGTERM stop it at once. ``say`` gets a
    progress line after FIRST_NOTE_S, then every NOTE_EVERY_S. A worker seen once counts as
    started (it may be setting up TensorFlow, port closed for an instant, when probed again).
    """
    began = clock()
    deadline, note_at = began + wait_s, began + FIRST_NOTE_S
    missing = dict.fromkeys(peers, "not tried")
    while True:
        for peer in list(missing):
            reason = probe(peer.host, peer.port, max(min(1.0, deadline - clock()), 0.05))
            if reason is None:
                del missing[peer]
            else:
                missing[peer] = reason
        if not missing:
            return
        now = clock()
        if now >= deadline:
            names = ", ".join(f"worker {peer.index} at {peer.address} ({reason})" for peer, reason in missing.items())
            raise SeqappError(f"{names} did not start within {wait_s:g} s; start every worker TF_CONFIG names, each "
                              "with its own task index, or give them longer with train.peer_wait_s")
        if now >= note_at:
            names = ", ".join(f"worker {peer.index} at {peer.address}" for peer in missing)
            say(f"waiting for {names} to start ({now - began:.0f} s of {wait_s:g} s, train.peer_wait_s)")
            note_at = now + NOTE_EVERY_S
        sleep(max(min(POLL_S, deadline - now), 0.0))


@contextlib.contextmanager
def holding_port(me: Peer) -> Iterator[None]:
    """Listen on this worker's port while it waits for the others, so that they see it is up
    (TensorFlow's own server takes the port only once every worker is there); a port another
    program holds is one line here, not a traceback from TensorFlow's server."""
    try:  # every address, as TensorFlow's server; SO_REUSEADDR: a closed connection's TIME_WAIT is no owner
        if socket.has_dualstack_ipv6():
            listener = socket.create_server(("", me.port), family=socket.AF_INET6, backlog=64, dualstack_ipv6=True)
        else:
            listener = socket.create_server(("", me.port), backlog=64)
    except OSError as exc:
        reason = "another program holds it" if exc.errno == errno.EADDRINUSE else (exc.strerror or str(exc)).lower()
        raise SeqappError(f"this worker's port {me.port} ({me.address}, worker {me.index} in TF_CONFIG) cannot be "
                          f"used: {reason}; stop that program or give this worker another port in TF_CONFIG") from None
    try:
        yield
    finally:
        listener.close()


def multi_worker_strategy(tf_config: str, peer_wait_s: float) -> Any:
    """``MultiWorkerMirroredStrategy`` for ``TF_CONFIG``, once every other worker is up.

    TensorFlow's set-up blocks in C++ until every worker has joined its coordination
    service, holding Python's GIL: no signal handler and no other thread runs meanwhile,
    and a worker that never comes leaves it there for good (still silent after 14 minutes).
    Waiting for the peers' ports first (:func:`wait_for_peers`) leaves only the seconds of
    the set-up itself there; during those SIGINT takes its default action
    (:func:`signals_end_the_process`), while SIGTERM goes to the preemption notifier
    TensorFlow installs there (a C handler in place of Python's, until the handlers are put
    back when the set-up returns).
    """
    import tensorflow as tf

    everyone, index = members(tf_config)
    me = everyone[index]
    with holding_port(me):
        wait_for_peers([peer for peer in everyone if peer.index != index], peer_wait_s, logger.info)
    register_s = max(peer_wait_s, REGISTER_MIN_S)
    bound_registration(register_s)
    try:
        with signals_end_the_process():
            return tf.distribute.MultiWorkerMirroredStrategy()
    except (tf.errors.OpError, RuntimeError) as exc:
        reason = (str(getattr(exc, "message", "") or exc).strip().splitlines() or [type(exc).__name__])[0]
        raise SeqappError(f"worker {index} ({me.address}) could not join the other workers within {register_s:g} s "
                          f"({reason[:200]}); start the training again on every worker") from exc


def bound_registration(seconds: float) -> None:
    """Have TensorFlow give up on a worker that does not register with the chief's coordination
    service within ``seconds`` (an error, hence one line, instead of a wait with no end): the
    settings ``MultiWorkerMirroredStrategy`` would choose, plus that timeout. It bounds the
    other workers' wait; the chief, which hosts the service, waits on regardless. Best effort:
    these are TensorFlow's private modules, and where they differ TensorFlow's defaults stay."""
    try:
        from tensorflow.compiler.xla.tsl.protobuf import coordination_config_pb2
        from tensorflow.python.distribute import multi_worker_util
        from tensorflow.python.distribute.cluster_resolver import TFConfigClusterResolver
        from tensorflow.python.eager import context

        resolver = TFConfigClusterResolver()
        spec = resolver.cluster_spec()
        if context.context().coordination_service is not None or resolver.task_type not in PEER_JOBS:
            return
        jobs = [coordination_config_pb2.CoordinatedJob(name=job, num_tasks=spec.num_tasks(job))
                for job in PEER_JOBS if job in spec.jobs]
        context.context().configure_coordination_service(
            service_type="standalone", service_leader=multi_worker_util.coordination_leader(spec),
            coordinated_jobs=jobs, cluster_register_timeout_in_ms=int(seconds * 1000))
    except (ImportError, AttributeError, TypeError, ValueError):
        return


@contextlib.contextmanager
def signals_end_the_process() -> Iterator[None]:
    """SIGINT and SIGTERM end the process at once, by their default action (a shell sees exit
    130 or 143), for the block: a C++ call that holds the GIL, where neither a Python handler
    nor the :class:`Watchdog` could act (unless the block installs a C handler of its own, as
    TensorFlow's set-up does for SIGTERM). The handlers before it are put back after it. Only
    for a block that writes nothing."""
    previous: dict[int, Any] = {}
    if threading.current_thread() is threading.main_thread():
        for signum in (signal.SIGINT, signal.SIGTERM):
            previous[signum] = signal.signal(signum, signal.SIG_DFL)
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


class Watchdog:
    """Ends the process after SIGINT or SIGTERM where the main thread cannot.

    Python runs signal handlers on the main thread, between bytecodes: while TensorFlow
    blocks in C++ (a collective waiting for a worker that is gone) the handler waits too, for
    ever. The C-level handler still writes the signal's number to ``signal.set_wakeup_fd``;
    this thread reads it there, gives the main thread GRACE_S to end the process (SAVE_GRACE_S
    while an epoch's state is being written, so that every worker keeps the same epoch), then
    keeps the draft if it holds a state (else removes it, as a normal exit does), says so in
    one line and calls ``os._exit(128 + signal)``. (TensorFlow's collective set-up holds the
    GIL, so no thread runs there: :func:`signals_end_the_process` covers it.)
    """

    def __init__(self, grace_s: float = GRACE_S, save_grace_s: float = SAVE_GRACE_S) -> None:
        self.grace_s, self.save_grace_s = grace_s, save_grace_s
        self.leave: Callable[[], str] | None = None  # keeps or removes the training's draft; says what it did
        self.saving = False
        self.settled = False  # the training has ended and the main thread reports it itself
        self.armed = False
        self.signum: int | None = None  # the first SIGINT or SIGTERM, once it came
        self.signalled = threading.Event()  # set with signum

    def arm(self) -> bool:
        """Start watching (from the main thread, once); False where signals cannot be watched."""
        if self.armed:
            return True
        if threading.current_thread() is not threading.main_thread():
            return False
        reader, writer = socket.socketpair()
        writer.setblocking(False)
        try:
            signal.set_wakeup_fd(writer.fileno(), warn_on_full_buffer=False)
        except (ValueError, OSError):
            reader.close()
            writer.close()
            return False
        self._sockets = (reader, writer)  # kept open for the life of the process
        threading.Thread(target=self._watch, args=(reader,), name="seqapp-watchdog", daemon=True).start()
        atexit.register(self.skip_teardown)
        self.armed = True
        return True

    def skip_teardown(self) -> None:
        """At exit after a signal: end now, with 128 + the signal's number (whatever the exit
        code would have been), the CLI having said what was kept. TensorFlow's teardown of a
        multi-worker process would take seconds more (3 s measured, holding the GIL, so the
        watchdog thread could not cut it short)."""
        # the thread may have read the signal's byte and wait for the GIL to say so: let it
        if not self.signalled.wait(0.05) or self.signum is None:
            return
        with contextlib.suppress(Exception):
            sys.stdout.flush()
            sys.stderr.flush()
        os._exit(128 + self.signum)

    def _watch(self, reader: socket.socket) -> None:
        signum = 0
        while signum not in (signal.SIGINT, signal.SIGTERM):
            data = reader.recv(1)
            if not data:
                return
            signum = data[0]
        self.signum = signum
        self.signalled.set()
        began = time.monotonic()
        while time.monotonic() - began < (self.save_grace_s if self.saving else self.grace_s):
            time.sleep(0.05)
        self.end(signum, time.monotonic() - began)

    def end(self, signum: int, waited: float) -> None:
        """Keep or remove the draft, say what was kept, and exit with 128 + ``signum``."""
        with contextlib.suppress(Exception):
            sys.stdout.flush()
            sys.stderr.flush()
        message = "" if self.settled or self.leave is None else self.leave()
        if message:
            with contextlib.suppress(OSError):
                os.write(2, f"{message} (ended by seqapp {waited:.0f} s after the signal: the training had not "
                            "stopped, TensorFlow still waiting on another worker)\n".encode())
        os._exit(128 + signum)

    @contextlib.contextmanager
    def watching(self, leave: Callable[[], str]) -> Iterator[None]:
        """While a training runs: ``leave`` is what :meth:`end` calls to keep or remove its draft
        (as a normal interrupted exit would), returning the line that says so."""
        self.leave, self.settled = leave, False
        try:
            yield
        finally:
            self.leave, self.settled = None, True

    @contextlib.contextmanager
    def writing(self) -> Iterator[list[int]]:
        """While an epoch's state is written: SIGINT and SIGTERM, a second one too, wait for the
        write to end (the block yields the list of those that came, for the caller to stop on
        then), and this watchdog waits for it up to SAVE_GRACE_S. So a worker stopped by two
        signals (a Ctrl-C, then the launch stopping it) still keeps the epoch the others keep."""
        held: list[int] = []
        previous: dict[int, Any] = {}
        if threading.current_thread() is threading.main_thread():
            for signum in (signal.SIGINT, signal.SIGTERM):
                previous[signum] = signal.signal(signum, lambda number, _frame: held.append(number))
        self.saving = True
        try:
            yield held
        finally:
            self.saving = False
            for signum, handler in previous.items():
                signal.signal(signum, handler)


watchdog = Watchdog()


@dataclass
class Plan:
    """The strategy a training runs under and this process's place in it."""

    mode: str
    strategy: Any
    workers: int = 1
    index: int = 0

    @property
    def chief(self) -> bool:
        """Worker 0 writes the run; the others train alongside and keep nothing."""
        return self.index == 0

    @property
    def replicas(self) -> int:
        return int(self.strategy.num_replicas_in_sync)

    def devices(self) -> list[str]:
        """The devices this process trains on, so a run says whether it had a GPU (a
        TensorFlow without CUDA quietly trains on the CPU)."""
        import tensorflow as tf

        try:
            return [str(device) for device in self.strategy.extended.worker_devices]
        except RuntimeError:  # the default strategy: ops go to the first GPU, else the CPU
            gpus = tf.config.list_logical_devices("GPU")
            return [(gpus or tf.config.list_logical_devices("CPU"))[0].name]

    def info(self, batch_size: int) -> dict:
        """What the run records about how it was trained (``distribute.json``); ``devices``
        are the chief's."""
        return {"strategy": self.mode, "workers": self.workers, "replicas": self.replicas,
                "batch_size_per_replica": batch_size, "global_batch_size": batch_size * self.replicas,
                "devices": self.devices()}


_plan: Plan | None = None


def plan(mode: str, peer_wait_s: float = 300.0) -> Plan:
    """The strategy for ``train.distribute`` (created once per process: a multi-worker one
    configures TensorFlow's collective operations, which can be done only once). A
    multi-worker one waits at most ``peer_wait_s`` for the other workers to start and arms
    the :class:`Watchdog`."""
    global _plan
    import tensorflow as tf

    tf_config = os.environ.get("TF_CONFIG")
    chosen = resolve(mode, tf_config, len(tf.config.list_physical_devices("GPU")))
    if _plan is not None and _plan.mode == chosen:
        return _plan
    workers, index = cluster(tf_config) if chosen == "multi_worker" else (1, 0)
    if chosen == "multi_worker":
        if not tf_config:
            raise SeqappError("train.distribute=multi_worker needs TF_CONFIG on each worker; start the workers "
                              "with 'seqapp launch --workers N -- train ...' or set TF_CONFIG")
        watchdog.arm()
        strategy = multi_worker_strategy(tf_config, peer_wait_s)
    elif chosen == "mirrored":
        strategy = tf.distribute.MirroredStrategy()
    else:
        strategy = tf.distribute.get_strategy()
    _plan = Plan(chosen, strategy, workers, index)
    return _plan


def check_agreement(plan: Plan, epoch: int) -> None:
    """Refuse to train when the workers start from different epochs (a worker died while
    the others were saving an epoch's state): their weights would differ for ever."""
    import tensorflow as tf

    value = tf.constant([float(epoch), float(epoch) ** 2])

    @tf.function
    def total() -> Any:  # the sums of e and e squared are R e and R e^2 only if every e is the same
        per_replica = plan.strategy.run(lambda: tf.identity(value))
        return plan.strategy.reduce(tf.distribute.ReduceOp.SUM, per_replica, axis=None)

    with plan.strategy.scope(), peers_lost():
        sums = total()
    if not bool(tf.reduce_all(tf.abs(sums - plan.replicas * value) < 0.5)):
        raise SeqappError(f"the workers' saved states are of different epochs (this one: {epoch}); they cannot go "
                          "on together: start the training again", resumable=False)


def fit_custom(model: Any, train_ds: Any, val_ds: Any, plan: Plan, callbacks: list, epochs: int,
               initial_epoch: int, log: Any) -> None:
    """``model.fit`` for strategies where it fails: seqapp's distributed step, Keras's callbacks.

    ``train_ds`` is batched by the global batch; TensorFlow's auto-sharding (by data)
    gives each replica its slice of every global batch, so the steps are those of a
    single process with the global batch. Progress is one line per epoch, on the chief.
    """
    import keras

    hooks = keras.callbacks.CallbackList(callbacks, model=model, epochs=epochs, steps=int(train_ds.cardinality()),
                                         verbose=0)
    clipnorm = model.optimizer.clipnorm
    with plan.strategy.scope():
        try:
            with peers_lost():
                train_step, val_step = distributed_steps(model, plan.strategy)
                run_epochs(model, plan, hooks, (train_step, val_step), (train_ds, val_ds), epochs, initial_epoch, log)
        finally:
            model.optimizer.clipnorm = clipnorm


@contextlib.contextmanager
def peers_lost() -> Iterator[None]:
    """TensorFlow's errors for a worker that left the training, as one line."""
    import tensorflow as tf

    try:
        yield
    except (tf.errors.UnavailableError, tf.errors.CancelledError, tf.errors.DeadlineExceededError) as exc:
        reason = str(exc.message).strip().splitlines()[0] if exc.message else type(exc).__name__
        raise SeqappError(f"the training stopped because another worker did ({reason[:200]})") from None


def run_epochs(model: Any, plan: Plan, hooks: Any, step_fns: tuple, datasets: tuple, epochs: int,
               initial_epoch: int, log: Any) -> None:
    """The epochs of :func:`fit_custom`, calling the callbacks where ``model.fit`` would."""
    strategy, (train_step, val_step), (train_ds, val_ds) = plan.strategy, step_fns, datasets
    steps = int(train_ds.cardinality())
    dist_train = strategy.experimental_distribute_dataset(by_data(train_ds))
    dist_val = strategy.experimental_distribute_dataset(by_data(val_ds)) if val_ds is not None else None
    model.stop_training = False
    hooks.on_train_begin()
    for epoch in range(initial_epoch, epochs):
        hooks.on_epoch_begin(epoch)  # sets the data epoch: the iterator below reads it
        began = time.perf_counter()
        logs = {"loss": run_epoch(train_step, iter(dist_train), hooks, steps)}
        seconds = time.perf_counter() - began
        if dist_val is not None:
            logs["val_loss"] = run_epoch(val_step, iter(dist_val), None, None)
        with watchdog.writing() as signals:  # the epoch's state: a signal now lets every worker finish it
            hooks.on_epoch_end(epoch, logs)
        if plan.chief and log is not None:
            log(f"Epoch {epoch + 1}/{epochs} - {steps} steps - {seconds:.1f}s training - "
                + " - ".join(f"{k}: {v:.4f}" for k, v in logs.items()))
        if signals:
            raise Interrupted(signals[0], saved=True)
        if model.stop_training:
            break
    hooks.on_train_end()


def by_data(dataset: Any) -> Any:
    """``dataset`` sharded by data: every worker reads the same batches (same split, same
    seeded order) and keeps its replicas' slices of each, so a global batch is that of one
    process (sharding by file does not apply: the data is in memory)."""
    import tensorflow as tf

    options = tf.data.Options()
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
    return dataset.with_options(options)


def run_epoch(step: Any, iterator: Any, hooks: Any, steps: int | None) -> float:
    """Run ``step`` over one epoch's iterator; the mean of the batch losses weighted by each
    batch's number of examples, which is how ``model.fit`` logs its epoch loss."""
    total = count = 0.0
    for batch, inputs in enumerate(iterator):
        loss, examples = step(inputs)
        total, count = total + float(loss) * float(examples), count + float(examples)
        if hooks is not None:
            hooks.on_train_batch_end(batch, {"loss": total / count})
        if steps is not None and batch + 1 >= steps:
            break
    return total / max(count, 1.0)


def weighted_losses(loss_object: Any, y: Any, y_pred: Any, sample_weight: Any) -> tuple[Any, Any]:
    """(sum of the weighted per-element losses, the divisor Keras's mean uses) of one batch.

    Keras's default reduction divides the weighted sum by the number of loss elements, or,
    when the prediction carries a Keras mask, by the number of unmasked ones; sample
    weights (sentiment's class weights) multiply the losses and leave the divisor alone.
    Returning both lets a replica divide by the divisor of the whole global batch.
    """
    import tensorflow as tf

    losses = tf.cast(loss_object.call(y, y_pred), tf.float32)
    weights = tf.ones_like(losses)
    if sample_weight is not None:
        sample_weight = tf.cast(sample_weight, tf.float32)
        if sample_weight.shape.rank == losses.shape.rank + 1 and sample_weight.shape[-1] == 1:
            sample_weight = tf.squeeze(sample_weight, -1)
        while sample_weight.shape.rank < losses.shape.rank:
            sample_weight = tf.expand_dims(sample_weight, -1)
        weights *= sample_weight
    mask = getattr(y_pred, "_keras_mask", None)  # where Keras's loss looks for it on TensorFlow
    if mask is None:
        return tf.reduce_sum(losses * weights), tf.cast(tf.size(losses), tf.float32)
    mask = tf.cast(tf.reshape(mask, tf.shape(losses)), tf.float32)
    return tf.reduce_sum(losses * weights * mask), tf.reduce_sum(mask)


def distributed_steps(model: Any, strategy: Any) -> tuple[Any, Any]:
    """A training step and a validation step, each over one distributed global batch.

    Each replica computes the sum of its weighted losses, the divisor (see
    :func:`weighted_losses`) and the sum's gradients, XLA-compiled when ``model.jit_compile``
    (collectives stay outside the compiled part); dividing by the global batch's divisor
    makes the gradients Keras's optimizer sums across replicas those of the global batch's
    mean loss. Returns (that loss, examples in the batch).
    """
    import keras
    import tensorflow as tf

    loss_object = model.loss
    if not isinstance(loss_object, keras.losses.Loss) or loss_object.reduction != "sum_over_batch_size":
        raise SeqappError("train.distribute=multi_worker needs a task compiled with one Keras loss object "
                          "of the default reduction; use train.distribute=none for this task")
    if isinstance(model.optimizer, keras.optimizers.LossScaleOptimizer):  # its scaling is not in the step below
        raise SeqappError("train.mixed_precision=mixed_float16 does not work with train.distribute=multi_worker "
                          "yet; use mixed_bfloat16 or none")
    total_sum = tf.distribute.ReduceOp.SUM
    clipnorm, model.optimizer.clipnorm = model.optimizer.clipnorm, None  # see replica_train; put back by fit_custom
    local_train, local_val = local_steps(model, loss_object, bool(model.jit_compile))

    def replica_train(inputs: Any) -> tuple[Any, Any]:
        context = tf.distribute.get_replica_context()
        loss_sum, divisor, examples, grads = local_train(inputs)
        divisor = context.all_reduce(total_sum, divisor)
        grads = [scaled(grad, 1.0 / tf.maximum(divisor, 1e-12)) for grad in grads]
        if clipnorm:  # clip the whole batch's gradient, as one process would; Keras would clip each share
            dense = [tf.convert_to_tensor(grad) for grad in grads]  # an embedding's gradient is sparse
            grads = [tf.clip_by_norm(grad, clipnorm) / context.num_replicas_in_sync
                     for grad in context.all_reduce(total_sum, dense)]
        model.optimizer.apply_gradients(zip(grads, model.trainable_variables))
        return tf.math.divide_no_nan(loss_sum, divisor), examples

    def replica_val(inputs: Any) -> tuple[Any, Any]:
        loss_sum, divisor, examples = local_val(inputs)
        divisor = tf.distribute.get_replica_context().all_reduce(total_sum, divisor)
        return tf.math.divide_no_nan(loss_sum, divisor), examples

    @tf.function
    def train_step(inputs: Any) -> tuple[Any, Any]:
        loss, examples = strategy.run(replica_train, args=(inputs,))
        return strategy.reduce(total_sum, loss, axis=None), strategy.reduce(total_sum, examples, axis=None)

    @tf.function
    def val_step(inputs: Any) -> tuple[Any, Any]:
        loss, examples = strategy.run(replica_val, args=(inputs,))
        return strategy.reduce(total_sum, loss, axis=None), strategy.reduce(total_sum, examples, axis=None)

    return train_step, val_step


def local_steps(model: Any, loss_object: Any, jit_compile: bool) -> tuple[Any, Any]:
    """One replica's share of a step, with no collective operation in it, so XLA can compile
    it: (loss sum, divisor, examples, gradients of the sum) and (loss sum, divisor, examples)."""
    import keras
    import tensorflow as tf

    def losses(inputs: Any, training: bool) -> tuple[Any, Any, Any]:
        x, y, sample_weight = keras.utils.unpack_x_y_sample_weight(inputs)
        loss_sum, divisor = weighted_losses(loss_object, y, model(x, training=training), sample_weight)
        return loss_sum, divisor, tf.cast(tf.shape(tf.nest.flatten(x)[0])[0], tf.float32)

    def train(inputs: Any) -> tuple[Any, Any, Any, list]:
        with tf.GradientTape() as tape:
            loss_sum, divisor, examples = losses(inputs, True)
        return loss_sum, divisor, examples, tape.gradient(loss_sum, model.trainable_variables)

    def val(inputs: Any) -> tuple[Any, Any, Any]:
        return losses(inputs, False)

    if not jit_compile:
        return train, val
    return tf.function(train, jit_compile=True), tf.function(val, jit_compile=True)


def scaled(grad: Any, factor: Any) -> Any:
    """``grad`` times ``factor``, a sparse (embedding) gradient kept sparse."""
    import tensorflow as tf

    if isinstance(grad, tf.IndexedSlices):
        return tf.IndexedSlices(grad.values * factor, grad.indices, grad.dense_shape)
    return grad * factor
