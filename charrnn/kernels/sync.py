"""A spin barrier for threads that run one compiled time loop together.

The recurrent product of a time step needs every unit of the previous step's state, so
threads that split a layer's units meet once per step. A Python-level barrier costs as
much as the step's arithmetic; this one is an atomic counter in an int64 array, a
fraction of a microsecond while both threads are on a core (docs/threads-and-kernels.md,
"Threads"). A waiter that spins long (the other thread was descheduled) yields its core
with sched_yield, so an oversubscribed machine slows down instead of stalling.

The counter only grows within one loop: meeting k (1-based) waits until it reaches
parts * k, so no reset is needed between meetings. The caller zeroes it before the loop.
"""

import llvmlite.binding as llvm
from llvmlite import ir
from numba import njit, prange, types
from numba.core import cgutils
from numba.extending import intrinsic

SPINS_BEFORE_YIELD = 2000  # spins before a waiter yields its core (docs/threads-and-kernels.md)
SPINS_BETWEEN_YIELDS = 256  # spin_while's: it may spin while other threads work
RELEASED = 1 << 62  # added by release_meetings: above every meeting's target


@intrinsic
def atomic_add(typingctx, counters, value):
    """counters[0] += value as one sequentially consistent atomic add."""
    if not (isinstance(counters, types.Array) and counters.dtype == types.int64):
        return None

    def codegen(context, builder, signature, args):
        array = context.make_array(signature.args[0])(context, builder, args[0])
        builder.atomic_rmw("add", array.data, args[1], "seq_cst")
        return context.get_dummy_value()
    return types.void(counters, types.int64), codegen


@intrinsic
def atomic_read(typingctx, counters):
    """counters[0], read atomically (acquire: later reads see what preceded the add)."""
    if not (isinstance(counters, types.Array) and counters.dtype == types.int64):
        return None

    def codegen(context, builder, signature, args):
        array = context.make_array(signature.args[0])(context, builder, args[0])
        return builder.load_atomic(array.data, "acquire", 8)
    return types.int64(counters), codegen


@intrinsic
def yield_core(typingctx):
    """sched_yield(2), linked by name like libm, so functions using it still cache."""
    def codegen(context, builder, signature, args):
        function_type = ir.FunctionType(ir.IntType(32), [])
        function = cgutils.get_or_insert_function(builder.module, function_type, "sched_yield")
        builder.call(function, [])
        return context.get_dummy_value()
    return types.void(), codegen


@intrinsic
def pause_core(typingctx):
    """x86's PAUSE, the hint a spin-wait loop gives the core (what GNU OpenMP's waiting
    threads run between reads); nothing on other processors."""
    def codegen(context, builder, signature, args):
        if llvm.get_process_triple().startswith(("x86_64", "i686", "i386")):
            function = cgutils.get_or_insert_function(
                builder.module, ir.FunctionType(ir.VoidType(), []), "llvm.x86.sse2.pause")
            builder.call(function, [])
        return context.get_dummy_value()
    return types.void(), codegen


@njit(cache=True, nogil=True)
def spin_while(flag, value, spins):
    """Read flag[0] while it equals value, at most `spins` times with a PAUSE after each
    read, yielding the core every SPINS_BETWEEN_YIELDS reads (so a thread that wants
    this core, such as one of Numba's team, gets it); return whether it changed. The
    pool's threads (parallel.py) wait for their next part like this before they sleep."""
    for spin in range(spins):
        if atomic_read(flag) != value:
            return True
        pause_core()
        if spin % SPINS_BETWEEN_YIELDS == SPINS_BETWEEN_YIELDS - 1:
            yield_core()
    return atomic_read(flag) != value


@njit(cache=True, nogil=True)
def spin_wait(flag, spins):
    """Read flag[0] until it is not zero, at most `spins` times with a PAUSE after each
    read, as a GNU OpenMP thread waits for work; return the reads made. machine.py times
    it to turn a spin time into GOMP_SPINCOUNT."""
    for spin in range(spins):
        if atomic_read(flag) != 0:
            return spin
        pause_core()
    return spins


@njit(cache=True, nogil=True)
def meet(counters, parts, meeting):
    """Wait until all `parts` threads have arrived at meeting number `meeting` (1, 2, ...)."""
    if parts == 1:
        return
    atomic_add(counters, 1)
    target = parts * meeting
    spins = 0
    while atomic_read(counters) < target:
        spins += 1
        if spins >= SPINS_BEFORE_YIELD:
            yield_core()
            spins = 0


@njit(cache=True, nogil=True)
def release_meetings(counters):
    """Let every thread of a loop pass all its remaining meetings at once: one of them
    has stopped (raised), and the others would otherwise wait for it forever (while
    spinning in compiled code, where even Ctrl-C is not seen)."""
    atomic_add(counters, RELEASED)


@njit(cache=True, nogil=True, parallel=True)
def team_probe(marks):
    """marks[k] = 1 on Numba's thread team: the first parallel call, which loads the
    threading layer (parallel.team_size asks which one it is)."""
    for k in prange(marks.shape[0]):
        marks[k] = 1
