"""How the CPU kernels split their work between threads (shared by every kernel module).

A kernel with much work to share is a serial ``@njit(nogil=True)`` worker that does items
``first .. last-1``. :func:`run_shared` calls it directly on the calling thread when there is a
single worker (small work), and otherwise gives each of ``workers`` threads a contiguous, even
share of the items (its own slice of the output: no races, no atomics): the calling thread
takes the first share, the resident threads of a small team (:func:`run_in_threads`) the
others. The worker releases the GIL, so the shares run at once.

Even shares end together only on cores of equal speed. Where the work is large
(``config.CLAIM_MIN_WORK``) and the items many, the items are cut instead into pieces, large
first and small last (:func:`pieces`), and each thread claims the next piece as it finishes
one (:func:`run_pieces`): a thread on a core that another process shares, or on a slower core,
takes fewer, and the caller no longer waits for it (``bench/busy_core.py``). A piece costs a
kernel call from Python, about 8 us.

Sharing the work from Python rather than from an ``@njit(parallel=True)`` driver around the
worker compiles nothing more: a ``prange`` driver that calls the worker by name links the
worker's whole code into its own and optimizes it again there (1 to 4 s per kernel on the first
run on a machine). The inference plan's convolutions (and the dense layer and weight transforms
around them) are the exception: called again and again, each a few dozen microseconds at batch
1, they go to one driver, :func:`run_on_layer`, that calls the worker's compiled code through
its address (:func:`compiled_address`), whose second thread starts at once and which compiles
in a fraction of a second for each kind of arguments.

Handing a share over is a counter in an array that the team's thread watches from compiled
code (no GIL held), yielding the processor between looks; it keeps watching for
``config.WORKER_SPIN_LOOKS`` looks after each share (about a millisecond), then sleeps on a
condition until woken. A share handed through a queue instead (a sleeping thread woken, the
GIL passed back and forth) cost 30 to 60 us on a 2-core machine, as much as a 14x14
convolution of MobileNetV2 at batch 1; watched, about 7 us (``bench/handoff.py``). The flag that a share is done
is also set from compiled code, so that neither thread waits for the GIL while the other holds
it (a thread that waits for the GIL sleeps, and waking it is the slow part). For the same reason
the team's thread, seeing a share, yields for ``SETTLE_SECONDS`` (a count of yields timed when
it starts, :func:`settle_yields`) before it reaches for the GIL, which the caller holds until its
own share's compiled call starts.

A share the team's thread has not taken yet when the caller finishes its own is run by the
caller (:meth:`_Watcher.finish`): a thread asleep after a pause between calls (a training
step's data and update, a rest between predictions) can take milliseconds to wake and reach the
GIL, while the caller would only wait.
"""

import os
import queue
import sys
import threading
import time

import numba
import numpy as np
from llvmlite import ir
from numba import njit, prange, types
from numba.core import cgutils
from numba.extending import intrinsic

from ... import config

# a team thread's counters: shares handed to it, shares done, asleep; the core the last share was
# handed from; a word to stop watching (quiet_team)
HANDED, DONE, ASLEEP, CALLER_CORE, QUIET = 0, 1, 2, 3, 4
#: how long the team's thread waits, yielding, between seeing a share and reaching for the GIL (seconds)
SETTLE_SECONDS = 6e-6


@njit(cache=True, nogil=True)
def _sum_over_workers(partial, out):
    """``out = partial.sum(axis=0)`` for ``partial`` (workers, K) and ``out`` (K,)."""
    for k in range(out.shape[0]):
        total = partial[0, k]
        for worker in range(1, partial.shape[0]):
            total += partial[worker, k]
        out[k] = total


@intrinsic
def _sched_yield(typingctx):
    """Give the processor to another runnable thread, if any (the C library's ``sched_yield``;
    called by name, so that the functions calling it can be cached)."""
    def codegen(context, builder, signature, args):
        function = cgutils.get_or_insert_function(builder.module, ir.FunctionType(ir.IntType(32), []),
                                                  "sched_yield")
        builder.call(function, [])
        return context.get_dummy_value()
    return types.void(), codegen


@intrinsic
def _sched_getcpu(typingctx):
    """The core the calling thread runs on (the C library's ``sched_getcpu``, by name)."""
    def codegen(context, builder, signature, args):
        function = cgutils.get_or_insert_function(builder.module, ir.FunctionType(ir.IntType(32), []),
                                                  "sched_getcpu")
        return builder.call(function, [])
    return types.int32(), codegen


@intrinsic
def _pthread_self(typingctx):
    """The calling thread's POSIX handle (the C library's ``pthread_self``, by name): equal for
    two calls on the same thread only."""
    def codegen(context, builder, signature, args):
        function = cgutils.get_or_insert_function(builder.module, ir.FunctionType(ir.IntType(64), []),
                                                  "pthread_self")
        return builder.call(function, [])
    return types.uint64(), codegen


@intrinsic
def _pin_to(typingctx, mask):
    """Let the calling thread run only on the cores of ``mask`` (a 1-D uint64 array, a C library
    ``cpu_set_t``'s words): ``sched_setaffinity(0, ...)`` by name; Linux moves the thread at once
    when its core is not in the set. Returns the call's result (0, or -1 with ``errno`` set)."""
    def codegen(context, builder, signature, args):
        array = context.make_array(signature.args[0])(context, builder, args[0])
        pointer = builder.bitcast(array.data, ir.IntType(8).as_pointer())
        size = builder.mul(builder.extract_value(array.shape, 0), ir.Constant(ir.IntType(64), 8))
        function = cgutils.get_or_insert_function(
            builder.module, ir.FunctionType(ir.IntType(32), [ir.IntType(32), ir.IntType(64),
                                                             ir.IntType(8).as_pointer()]), "sched_setaffinity")
        return builder.call(function, [ir.Constant(ir.IntType(32), 0), size, pointer])
    return types.int32(mask), codegen


if sys.platform.startswith("linux"):
    @njit(cache=True, nogil=True)
    def calling_thread():
        """``(handle, core)`` of the calling thread (:func:`_pthread_self`, :func:`_sched_getcpu`):
        what Numba's ``prange`` drivers call before their loop (compiled in, so chosen here)."""
        return _pthread_self(), np.int64(_sched_getcpu())

    @njit(cache=True, nogil=True)
    def keep_off_caller(caller, core, others):
        """In a threading layer's worker (not the ``caller`` thread) that runs on the caller's
        ``core``, move it off that core: onto the cores of ``others[core]`` (the process's cores
        but that one). See :func:`keep_off_masks`."""
        if 0 <= core < others.shape[0] and _pthread_self() != caller and _sched_getcpu() == core:
            _pin_to(others[core])
else:  # (no cores told apart, nothing to do)
    @njit(cache=True, nogil=True)
    def calling_thread():
        """(Not on Linux: no handle, no core.)"""
        return np.uint64(0), np.int64(-1)

    @njit(cache=True, nogil=True)
    def keep_off_caller(caller, core, others):
        """(Not on Linux: nothing to do.)"""


@njit(cache=True, nogil=True)
def _count(flags, index):
    """``flags[index] += 1``, from compiled code."""
    flags[index] += 1


@njit(cache=True, nogil=True)
def _count_handed(flags):
    """Note the calling thread's core, then count a share handed, from compiled code (Linux:
    ``sched_getcpu`` is in its C libraries only)."""
    flags[CALLER_CORE] = _sched_getcpu()
    flags[HANDED] += 1


_ON_LINUX = sys.platform.startswith("linux")


def keep_off_masks():
    """``(cores, words)`` uint64 array: row ``c`` is the set of cores this process may run on,
    but core ``c`` (the whole set where ``c`` is its only core), as ``sched_setaffinity`` takes
    it; what the ``prange`` drivers of the inference plan's kernels pass to
    :func:`keep_off_caller`, made once (a process whose set of cores changes keeps the first).

    A threading layer's worker that has slept since its last loop (a prediction after a pause) is
    woken by the thread that starts the next loop, and in a virtual machine Linux often wakes it
    on the waker's core (:meth:`_Watcher.keep_off` describes the same for the kernels' team):
    the two then take turns on one core for the whole call. MobileNetV2 at batch 1 with 0.3 s
    before each call (``bench/rested.py``) took 12.5-13.4 ms so, against 6.6-6.8 back to back;
    with the workers kept off the caller's core, 8.3-8.6 (against 8.8-9.8 with the team)."""
    global _KEEP_OFF_MASKS
    if _KEEP_OFF_MASKS is None:
        allowed = os.sched_getaffinity(0) if hasattr(os, "sched_getaffinity") else set()
        cores = max([os.cpu_count() or 1] + [core + 1 for core in allowed])
        masks = np.zeros((cores, (cores + 63) // 64), np.uint64)
        for core in range(cores):
            for other in (allowed - {core}) or allowed:
                masks[core, other // 64] |= np.uint64(1 << (other % 64))
        _KEEP_OFF_MASKS = masks
    return _KEEP_OFF_MASKS


_KEEP_OFF_MASKS = None


@njit(cache=True, nogil=True)
def _watch(flags, index, seen, looks):
    """Whether ``flags[index]`` moves from ``seen`` within ``looks`` looks, yielding the
    processor between looks."""
    for _ in range(looks):
        if flags[index] != seen:
            return True
        _sched_yield()
    return flags[index] != seen


@njit(cache=True, nogil=True)
def _yields(count):
    """Yield the processor ``count`` times."""
    for _ in range(count):
        _sched_yield()


@njit(cache=True, nogil=True)
def _watch_for_share(flags, seen, looks, settle):
    """Watch for the next share (:func:`_watch`); when it comes, ``settle`` more yields before
    returning (and taking the GIL): the handing thread is then inside its own share, no longer
    holding the GIL, and this one does not sleep waiting for it. Told to be quiet
    (:func:`quiet_team`), it stops watching (returns False: it goes to sleep)."""
    for _ in range(looks):
        if flags[HANDED] != seen:
            _yields(settle)
            return True
        if flags[QUIET]:
            flags[QUIET] = 0
            return flags[HANDED] != seen
        _sched_yield()
    if flags[HANDED] != seen:
        _yields(settle)
        return True
    return False


@njit(cache=True, nogil=True)
def _done_then_watch(flags, ticket, seen, looks, settle):
    """Mark share ``ticket`` done, then :func:`_watch_for_share`."""
    flags[DONE] = ticket
    return _watch_for_share(flags, seen, looks, settle)


def settle_yields(seconds=None, trials=5, count=1000):
    """How many yields of the processor take ``seconds`` (``SETTLE_SECONDS`` by default) on this
    machine, timed here (the fastest of ``trials`` runs of ``count`` yields).

    A thread that reaches for the GIL while another holds it sleeps until woken, and waking it
    on another core is slow on a virtual machine, where a processor that goes idle halts. The
    caller holds the GIL from counting a share handed until its own share's compiled call
    starts, a few microseconds of Python; the team's thread, seeing the share, yields this long
    first. A yield's cost differs between machines, so the count is timed, not fixed: with 4
    yields, on a 2-core Intel Xeon, MobileNetV2's second-thread shares started about 30 us after
    the hand, with 6 us of them 12 us after (``bench/team_wait.py``; docs/performance.md)."""
    seconds = SETTLE_SECONDS if seconds is None else seconds
    _yields(1)  # compiled (or loaded) before timing
    best = float("inf")
    for _ in range(trials):
        start = time.perf_counter()
        _yields(count)
        best = min(best, time.perf_counter() - start)
    return max(1, round(seconds * count / max(best, 1e-9)))


@njit(cache=True, nogil=True)
def _watch_until(flags, index, target, looks):
    """Whether ``flags[index]`` reaches ``target`` within ``looks`` looks, yielding the
    processor between looks."""
    for _ in range(looks):
        if flags[index] >= target:
            return True
        _sched_yield()
    return flags[index] >= target


class _Watcher:
    """A resident daemon thread that runs the shares handed to it, watching for the next one
    between shares (see the module's docstring).

    A share waits in :attr:`slot` with its ticket (the count of shares handed so far) until
    either this thread or the caller pops it (``list.pop`` under the GIL: one of them gets it).
    This thread marks the ticket done after running it; a caller that finishes its own share
    first runs this one itself (:meth:`finish`): waking a sleeping thread can take milliseconds,
    in which the caller would only wait."""

    def __init__(self, number):
        self.flags = np.zeros(5, np.int64)
        self.slot = []  # [(ticket, function, arguments)], at most one
        self.error = None
        self.avoided = -1  # the core this thread keeps off (see keep_off)
        self.kept_off = set()  # the allowed cores taken out of this thread's set
        self.awake = threading.Condition()
        self.thread = threading.Thread(target=self.serve, name=f"cnnlab-kernels-{number}", daemon=True)
        self.thread.start()

    def serve(self):
        seen, settle = 0, settle_yields()
        handed = _watch_for_share(self.flags, seen, config.WORKER_SPIN_LOOKS, settle)
        while True:
            if not handed:
                self.sleep(seen)
            seen = int(self.flags[HANDED])
            try:
                ticket, function, arguments = self.slot.pop()
            except IndexError:  # the caller took it back and ran it
                handed = _watch_for_share(self.flags, seen, config.WORKER_SPIN_LOOKS, settle)
                continue
            if _ON_LINUX and self.flags[CALLER_CORE] != self.avoided:
                self.keep_off(int(self.flags[CALLER_CORE]))
            try:
                function(*arguments)
            except BaseException as exc:  # handed back to the caller, which raises it
                self.error = exc
            # let go of the share's arrays before waiting for the next one: held here, a buffer
            # pool would see them still in use after the call, and make new ones
            function = arguments = None
            handed = _done_then_watch(self.flags, ticket, seen, config.WORKER_SPIN_LOOKS, settle)

    def keep_off(self, core):
        """Have this thread run on any allowed core but ``core``, the one the handing thread runs
        on (called by this thread, or by the caller when it hands a share from another core).

        A sleeping thread is woken by the thread that hands it a share (or releases the GIL it
        waits for), and Linux may wake it on the waker's core when the other core looks busy:
        in a virtual machine, a processor that has been idle for a while is reported as taken
        by the host. The two threads then share one core for the whole call, each yielding to
        the other, and the caller waits for this thread's shares about as long as it works on
        its own (docs/performance.md, "A rested call", measured with ``bench/rested.py``)."""
        self.avoided = core
        if not hasattr(os, "sched_setaffinity"):
            return
        try:
            allowed = os.sched_getaffinity(self.thread.native_id) | self.kept_off
            others = allowed - {core}
            if others:
                os.sched_setaffinity(self.thread.native_id, others)
            self.kept_off = allowed - others
        except OSError:  # the process's cores changed under us: leave the scheduler to it
            pass

    def sleep(self, seen):
        with self.awake:
            self.flags[ASLEEP] = 1
            # looked at from compiled code after saying so (releasing the GIL on the way is a full
            # memory fence), as :meth:`hand` looks at ASLEEP after counting: one of them sees the other
            while not _watch(self.flags, HANDED, seen, 1):
                self.awake.wait(1.0)
            self.flags[ASLEEP] = 0

    def hand(self, function, arguments):
        """Hand ``function(*arguments)`` to this thread; :meth:`finish` it. Returns its ticket."""
        global _HANDED_SINCE_QUIET
        ticket = int(self.flags[HANDED]) + 1
        self.slot.append((ticket, function, arguments))
        self.flags[QUIET] = 0  # (a word to stop watching is for the time before this share)
        _HANDED_SINCE_QUIET = True
        if _ON_LINUX:
            _count_handed(self.flags)
            if self.flags[CALLER_CORE] != self.avoided:  # the caller moved, maybe onto this thread's core
                self.keep_off(int(self.flags[CALLER_CORE]))
        else:
            _count(self.flags, HANDED)
        if self.flags[ASLEEP]:
            with self.awake:
                self.awake.notify()
        return ticket

    def finish(self, ticket):
        """See share ``ticket`` done: run it here if this thread has not taken it yet, else wait
        for it. Returns its error or None."""
        try:
            _, function, arguments = self.slot.pop()
        except IndexError:  # this thread has it
            while not _watch_until(self.flags, DONE, ticket, config.WORKER_SPIN_LOOKS):
                pass
            error, self.error = self.error, None
            return error
        try:
            function(*arguments)
        except BaseException as exc:
            return exc
        return None


class _WatchingTeam:
    """The watching threads, and the lock that gives them to one caller at a time."""

    def __init__(self):
        self.lock = threading.Lock()
        self.members = []

    def run(self, function, shares):
        """``function(*share)`` for every share: the first on the calling thread, the others on
        the team's threads; shares run one after another on the calling thread while another
        caller has the team (the same shares: the same results)."""
        if not self.lock.acquire(blocking=False):
            for arguments in shares:
                function(*arguments)
            return
        try:
            while len(self.members) < len(shares) - 1:
                self.members.append(_Watcher(len(self.members)))
            members = self.members[:len(shares) - 1]
            tickets = [member.hand(function, arguments) for member, arguments in zip(members, shares[1:])]
            error = None
            try:
                function(*shares[0])
            except BaseException as exc:
                error = exc
            for member, ticket in zip(members, tickets):
                failed = member.finish(ticket)
                error = error or failed
        finally:
            self.lock.release()
        if error is not None:
            raise error


class _QueueTeam:
    """Where the C library has no ``sched_yield`` (Windows): resident daemon threads that take
    shares from a queue, one at a time each."""

    def __init__(self):
        self.tasks = queue.SimpleQueue()
        self.size = 0
        self.lock = threading.Lock()

    def serve(self):
        while True:
            function, arguments, done = self.tasks.get()
            try:
                function(*arguments)
            except BaseException as exc:  # handed back to the caller, which raises it
                failed = exc
            else:
                failed = None
            function = arguments = None  # let go of the share's arrays before the caller goes on (_Watcher)
            done.put(failed)
            done = failed = None

    def run(self, function, shares):
        with self.lock:
            while self.size < len(shares) - 1:
                threading.Thread(target=self.serve, name=f"cnnlab-kernels-{self.size}", daemon=True).start()
                self.size += 1
        done = queue.SimpleQueue()
        for arguments in shares[1:]:
            self.tasks.put((function, arguments, done))
        error = None
        try:
            function(*shares[0])
        except BaseException as exc:
            error = exc
        for _ in shares[1:]:
            failed = done.get()
            error = error or failed
        if error is not None:
            raise error


_Team = _WatchingTeam if hasattr(os, "sched_yield") else _QueueTeam
_team = _Team()


def _new_team_after_fork():
    global _team
    _team = _Team()  # a forked child has none of the parent's threads


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_new_team_after_fork)


def quiet_team():
    """Tell the team's threads that watch for their next share to sleep instead (they are woken
    by the next share handed to them): the work is going to the threading layer's threads (the
    inference plan's ``prange`` drivers), which :func:`keep_off_caller` puts on the same other
    cores. A team thread watching there yields its core thousands of times a call: ResNet-18 at
    batch 1 (its max pooling and weight transforms on the team, its convolutions on the layer)
    made 2,876-3,283 context switches a call back to back and took 17.6-18.4 ms; told to be
    quiet, 101-104 switches and 17.8-18.7 ms (``bench/rested.py``, three and two runs).

    Only the team's shares handed since the last word wake its threads to watch, so the word
    is said only after some were (:data:`_HANDED_SINCE_QUIET`): a call whose steps all go to the
    threading layer reads nothing of the team's at each step."""
    global _HANDED_SINCE_QUIET
    if not _HANDED_SINCE_QUIET:
        return
    _HANDED_SINCE_QUIET = False
    for member in _team.members if isinstance(_team, _WatchingTeam) else ():
        if not member.flags[ASLEEP]:
            member.flags[QUIET] = 1


#: whether the team has been handed shares since :func:`quiet_team` last told it to be quiet (a
#: hint: set by every hand, so a thread that watches after one is told at the next word)
_HANDED_SINCE_QUIET = True


@intrinsic
def _call_at(typingctx, address, arguments, first, last):
    """Call the compiled function at ``address``, as ``function(*arguments, first, last)``: a
    Numba function returning nothing, compiled for exactly these argument types (its machine
    code's address, :func:`compiled_address`). True when it returned without an error.

    The call goes through the address, so the caller's code does not contain the function's:
    Numba links a called function's whole code into its caller and compiles it again there."""
    if not isinstance(address, types.Integer) or not isinstance(arguments, types.BaseTuple):
        return None
    argument_types = tuple(arguments.types) + (first, last)

    def codegen(context, builder, signature, args):
        address_value, values, first_value, last_value = args
        passed = [builder.extract_value(values, i) for i in range(len(arguments.types))] + [first_value, last_value]
        function_type = context.call_conv.get_function_type(types.none, argument_types)
        function = builder.inttoptr(address_value, function_type.as_pointer())
        status, _ = context.call_conv.call_function(builder, function, types.none, argument_types, passed)
        return builder.not_(status.is_error)
    return types.boolean(address, arguments, first, last), codegen


@njit(parallel=True, cache=True, nogil=True)
def _shares_at(address, edges, arguments, others, failed):
    """``function(*arguments, edges[i], edges[i+1])`` for each share ``i`` on the threads of
    Numba's threading layer, the function's compiled code at ``address`` (:func:`_call_at`);
    ``failed[i]`` says whether share ``i`` raised, and the count of those is returned. Each
    share first moves a worker that runs on the calling thread's core off it
    (:func:`keep_off_caller`; ``others``: :func:`keep_off_masks`). One driver for every kernel:
    it compiles once per kind of arguments, in a fraction of a second, where a driver calling a
    kernel by name would compile the kernel's code again."""
    caller, core = calling_thread()
    failures = 0
    for share in prange(edges.shape[0] - 1):
        keep_off_caller(caller, core, others)
        ok = _call_at(address, arguments, edges[share], edges[share + 1])
        failed[share] = not ok
        failures += 0 if ok else 1
    return failures


@njit(parallel=True, cache=True, nogil=True)
def _pair_then_shares_at(first, first_edges, first_arguments, second, second_edges, second_arguments, third,
                         third_edges, third_arguments, others, failed):
    """:func:`_shares_at` of two kernels' items in one loop, then of a third's in another, in
    one call: share ``i`` of the first loop runs the first kernel's share ``i`` (``first_edges[i]
    .. first_edges[i+1]-1``, the compiled code at ``first``), then, where it returned without an
    error, the second's share ``i``, on the same thread (the caller makes the shares such that
    the second's reads only what the first's wrote); once every share of both is done, the
    second loop runs the third kernel's shares (none where ``third_edges`` holds one edge). The
    second loop's flags follow the first's in ``failed``."""
    caller, core = calling_thread()
    failures = 0
    pairs = first_edges.shape[0] - 1
    for share in prange(pairs):
        keep_off_caller(caller, core, others)
        ok = _call_at(first, first_arguments, first_edges[share], first_edges[share + 1])
        if ok:
            ok = _call_at(second, second_arguments, second_edges[share], second_edges[share + 1])
        failed[share] = not ok
        failures += 0 if ok else 1
    for share in prange(third_edges.shape[0] - 1):
        keep_off_caller(caller, core, others)
        ok = _call_at(third, third_arguments, third_edges[share], third_edges[share + 1])
        failed[pairs + share] = not ok
        failures += 0 if ok else 1
    return failures


# a third kernel of no shares: run_pair_on_layer's second loop then runs none
_NO_THIRD = (None, (), np.zeros(1, np.int64), 0)


def run_pair_on_layer(first, second, third=None):
    """:func:`run_on_layer` of two kernels' items, each ``(function, arguments, edges,
    address)``, with as many shares each, share ``i`` of the second after share ``i`` of the
    first on the same thread, in one loop on the threading layer (one start of the layer's
    threads, none between the two, and the second reads from its own core's cache what the
    first wrote there); then, with ``third`` (of the same form), that kernel's shares in a
    second loop of the same compiled call, once the first loop is done. A share that raised is
    run again from Python (a pair's first's then second's), which raises its error."""
    quiet_team()
    count = first[2].shape[0] - 1
    total = count + (0 if third is None else third[2].shape[0] - 1)
    failed = _failed_flags(total)
    masks = _KEEP_OFF_MASKS if _KEEP_OFF_MASKS is not None else keep_off_masks()
    third_kernel = _NO_THIRD if third is None else third
    failures = _pair_then_shares_at(first[3], first[2], first[1], second[3], second[2], second[1], third_kernel[3],
                                    third_kernel[2], third_kernel[1], masks, failed)
    if failures:
        for share in np.flatnonzero(failed[:total]):
            kernels = (first, second) if share < count else (third,)
            share = share if share < count else share - count
            for function, arguments, edges, _ in kernels:
                function(*arguments, int(edges[share]), int(edges[share + 1]))


def compiled_address(function, arguments):
    """The address of ``function``'s machine code for calls ``function(*arguments, first,
    last)`` with int ``first`` and ``last`` (a kernel's items), compiled first if needed (or
    loaded from the on-disk cache), for :func:`run_on_layer`. Valid while the process runs: the
    dispatcher keeps its compiled code."""
    key = (function,) + tuple(_kind(a) for a in arguments)
    address = _ADDRESSES.get(key)
    if address is None:
        signature = tuple(function.typeof_pyval(a) for a in arguments) + (types.intp, types.intp)
        function.compile(signature)
        result = function.overloads[signature]
        address = _ADDRESSES[key] = result.library.get_pointer_to_function(result.fndesc.llvm_func_name)
    return address


def _kind(value):
    """What Numba's type of an argument depends on, for the compiled code (Numba's ``typeof``
    takes tens of microseconds for a few arrays): an array's dtype, dimensions and layout (its
    read-only and alignment flags change the type but not the code), a tuple's items', else
    the value's class."""
    if type(value) is np.ndarray:
        flags = value.flags
        return value.dtype, value.ndim, flags.c_contiguous, flags.f_contiguous
    if type(value) is tuple:
        return tuple(_kind(v) for v in value)
    return type(value)


_ADDRESSES = {}  # (dispatcher, the arguments' kinds) -> compiled_address


def run_on_layer(function, arguments, edges, address=None):
    """``function(*arguments, edges[i], edges[i+1])`` for each share ``i`` (``function`` a
    kernel's items, :func:`edges` of its even shares), on Numba's threading layer: each share
    first moves off the caller's core (:func:`keep_off_caller`), and the team's threads are told
    to sleep first (:func:`quiet_team`). ``address``: :func:`compiled_address` of ``function``
    for these arguments' types, where the caller keeps it (worked out here otherwise). A share
    that raised is run again from Python, which raises its error."""
    if address is None:
        address = compiled_address(function, arguments)
    quiet_team()
    failed = _failed_flags(edges.shape[0] - 1)
    masks = _KEEP_OFF_MASKS if _KEEP_OFF_MASKS is not None else keep_off_masks()
    if _shares_at(address, edges, arguments, masks, failed):
        for share in np.flatnonzero(failed[:edges.shape[0] - 1]):
            function(*arguments, int(edges[share]), int(edges[share + 1]))


_LAYER = threading.local()  # .failed: this thread's flags of the shares that raised (run_on_layer)


def _failed_flags(count):
    """This thread's flags of the shares that raised, at least ``count`` of them (kept for the
    next call: :func:`run_on_layer`, :func:`run_pair_on_layer`)."""
    failed = _LAYER.__dict__.get("failed")
    if failed is None or failed.shape[0] < count:
        failed = _LAYER.failed = np.zeros(max(64, count), np.bool_)
    return failed


def run_in_threads(function, shares):
    """Call ``function(*share)`` for every argument tuple in ``shares`` at once: the first on
    the calling thread, the others on the team's threads; return when all are done (raising
    the first error). ``function`` must release the GIL (``nogil=True``) to run in parallel."""
    if len(shares) == 1:
        function(*shares[0])
    else:
        _team.run(function, shares)


def shares(items, workers):
    """``(first, last)`` of each worker's contiguous, even share of ``items``; where they do not
    divide evenly, the first shares take the extra items: the calling thread runs the first,
    and the team's threads start theirs several microseconds later (``bench/team_wait.py``).
    LeNet's second reference convolution has 11 items (blocks of 6 samples): 6 and 5, not 5
    and 6 (``bench/conv_engines.py``, 2 threads: 1.11x PyTorch -> 1.07x and 1.10x)."""
    size, extra = divmod(items, workers)
    bounds = [w * size + min(w, extra) for w in range(workers + 1)]
    return list(zip(bounds, bounds[1:]))


def edges(bounds):
    """The ``first`` of each ``(first, last)`` piece of ``bounds`` (:func:`shares`,
    :func:`pieces`) and the last one's ``last``, as an int64 array: how the ``prange`` drivers
    take their shares (share ``i`` is ``edges[i] .. edges[i+1]-1``)."""
    return np.array([first for first, _ in bounds] + [bounds[-1][1]], np.int64)


def pieces(items, workers, work):
    """How ``workers`` threads split ``items`` of ``work`` (element visits, as
    :func:`workers_for`) in all: :func:`shares`, one per worker, or, for work of at least
    ``config.CLAIM_MIN_WORK`` in at least four items per worker, :func:`claimed_pieces` for the
    threads to claim as they go (:func:`run_pieces`)."""
    workers = max(1, min(workers, items))
    if workers > 1 and items >= 4 * workers and work >= config.CLAIM_MIN_WORK:
        return claimed_pieces(items, workers, work)
    return shares(items, workers)


def claimed_pieces(items, workers, work):
    """``(first, last)`` pieces of ``items`` (of ``work`` in all) in order, each a
    ``2 * workers``-th of the items left, large first, small last, so that threads that take the
    next piece as they finish the last end close together, whatever their cores' speeds.

    The smallest pieces are a ``16 * workers``-th of the items, but hold at least an
    ``8 * workers``-th of ``config.CLAIM_MIN_WORK``'s work (each piece costs a kernel call):
    large convolutions end in small pieces, and the least work that claims pieces takes at
    most ``8 * workers`` calls. Ending in pieces of an ``8 * workers``-th, the threads of the
    CIFAR-sized reference convolution (64 items) finished up to a 4-item piece apart; in
    2-item pieces, best of four rounds 4.39 -> 4.08 ms (ResNet's 56x56 one 46.8 -> 46.0 ms)."""
    by_work = -(-items * int(config.CLAIM_MIN_WORK) // max(1, 8 * workers * work))
    least = max(-(-items // (16 * workers)), min(by_work, -(-items // (8 * workers))))
    result, first = [], 0
    while first < items:
        last = min(items, first + max(least, (items - first) // (2 * workers)))
        result.append((first, last))
        first = last
    return result


def _claim_calls(function, pending):
    """``function(*arguments)`` for each argument tuple this thread takes from ``pending``, an
    iterator the threads share (its ``next`` runs under the GIL: each tuple goes to one)."""
    for arguments in pending:
        function(*arguments)


def run_pieces(function, calls, workers):
    """``function(*arguments)`` for every tuple of ``calls`` (one per piece, from
    :func:`pieces`) on ``workers`` threads: one call each when there are as many calls as
    workers (:func:`run_in_threads`), else each thread takes the next call as it finishes its
    last, so that a thread on a slower or busier core makes fewer of them (a call that writes
    only its own items' outputs gives the same results whichever thread makes it)."""
    workers = max(1, min(workers, len(calls)))
    if len(calls) == workers:
        run_in_threads(function, calls)
    else:
        pending = iter(calls)
        run_in_threads(_claim_calls, [(function, pending)] * workers)


def workers_for(work, threads=None):
    """How many threads a CPU kernel should share ``work`` (multiply-adds or element visits)
    between: Numba's thread count (``threads`` when the caller knows it), but no more than gives
    each thread ``config.PARALLEL_MIN_WORK`` (so 1 for small work). Below that, handing out
    shares costs more than it saves."""
    per_thread = max(1, config.PARALLEL_MIN_WORK)
    if work < 2 * per_thread:  # (without asking Numba, which costs a ctypes call, 0.8 us)
        return 1
    return max(1, min(numba.get_num_threads() if threads is None else threads, work // per_thread))


def run_split(serial, items, work, *arguments):
    """:func:`run_shared` on as many threads as ``work`` (for all ``items``) is worth
    (:func:`workers_for`): the element-wise kernels' driver."""
    run_shared(serial, items, workers_for(work), *arguments)


def run_shared(serial, items, workers, *arguments, work=0):
    """Run ``serial(*arguments, first, last)`` over ``0 .. items-1``: on this thread alone when
    ``workers`` (capped at ``items``) is 1, else in the :func:`pieces` of ``work`` (element
    visits, all items together) on ``workers`` threads. ``serial`` must write only its own
    items' outputs."""
    workers = max(1, min(workers, items))
    if workers == 1:
        serial(*arguments, 0, items)
    else:
        run_pieces(serial, [arguments + piece for piece in pieces(items, workers, work)], workers)
