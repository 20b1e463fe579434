"""What a run's dead child means and what the trainer does about it (no gRPC, no Redis): resume it from its
newest checkpoint with the same micro-batch after a plain kill or crash, with half the micro-batch and twice
the accumulation after memory exhaustion (the same rows per optimizer step, so the loss curve continues), a
bounded number of times with a growing delay; after that, or for an error the engine raised on purpose, the
run fails with the reason.

Memory exhaustion shows up as one of: an allocation failure inside the child (MemoryError, MLX's "Unable to
allocate"), a kill by the kernel's OOM killer (SIGKILL while the cgroup's oom_kill counter grew), a SIGSEGV /
SIGBUS / SIGABRT of a child under an address-space cap (what MLX does when an allocation fails there), or a
second SIGKILL in a row at the same micro-batch (no cgroup to ask: a repeated kill is most likely memory).
"""

from __future__ import annotations

import re
import signal
from dataclasses import dataclass
from pathlib import Path

ALLOCATION_FAILURE = re.compile(r"unable to allocate|out of memory|bad_alloc|memoryallocation", re.IGNORECASE)
# Signals a child dies from when an allocation fails under RLIMIT_AS (MLX segfaults or aborts).
CAPPED_MEMORY_SIGNALS = {signal.SIGSEGV, signal.SIGBUS, signal.SIGABRT}
CGROUP_EVENTS = Path("/sys/fs/cgroup/memory.events")


def address_space_capped() -> bool:
    """This process runs under an address-space cap (e.g. `prlimit --as`), which its run processes inherit."""
    import resource

    return resource.getrlimit(resource.RLIMIT_AS)[0] != resource.RLIM_INFINITY


def oom_kills() -> int | None:
    """The cgroup's OOM-kill counter (cgroup v2), or None where it cannot be read."""
    try:
        for line in CGROUP_EVENTS.read_text().splitlines():
            name, _, value = line.partition(" ")
            if name == "oom_kill":
                return int(value)
    except (OSError, ValueError):
        pass
    return None


@dataclass(frozen=True)
class Death:
    """How a child ended without a result, as the recovery policy sees it."""

    exitcode: int | None
    error: dict[str, str] | None  # the child's own error record, when it could send one
    memory_capped: bool  # the child ran under an address-space cap
    oom_killed: bool  # the cgroup's OOM-kill counter grew while it ran

    @property
    def signal(self) -> signal.Signals | None:
        code = self.exitcode
        return signal.Signals(-code) if code is not None and code < 0 else None

    @property
    def memory(self) -> bool:
        if self.error is not None:
            return self.error.get("cause") == "memory"
        sig = self.signal
        if sig == signal.SIGKILL:
            return self.oom_killed
        return sig in CAPPED_MEMORY_SIGNALS and self.memory_capped

    @property
    def killed(self) -> bool:
        """Died from a signal with no error of its own: worth resuming as it was."""
        return self.error is None and self.signal is not None

    def describe(self) -> str:
        if self.error is not None:
            return self.error.get("message", "failed")
        sig = self.signal
        if sig is not None:
            why = " (out of memory)" if self.memory else ""
            return f"run process killed by {sig.name}{why}"
        return f"run process exited with code {self.exitcode} without a result"


@dataclass(frozen=True)
class Attempts:
    """What happened to this run on this trainer so far (kept by the trainer per run)."""

    memory: int = 0  # halvings done
    crashes: int = 0  # plain resumes done
    last_signal: int = 0  # the signal that ended the previous attempt (0 = none)


@dataclass(frozen=True)
class Decision:
    resume: bool
    batch_size: int
    grad_accumulation: int
    delay_seconds: float
    reason: str  # for the status event (the UI's and CLI's log line) or the FAILED error
    attempts: Attempts
    memory: bool


def smaller_micro_batch(batch_size: int, grad_accumulation: int, workers: int = 1) -> tuple[int, int] | None:
    """Half the micro-batch (the largest divisor at most half of it, a multiple of the data-parallel workers so
    it still splits over them), accumulation scaled to keep the product."""
    for candidate in range(batch_size // 2, 0, -1):
        if batch_size % candidate == 0 and candidate % workers == 0:
            return candidate, grad_accumulation * (batch_size // candidate)
    return None


def decide(
    death: Death,
    batch_size: int,
    grad_accumulation: int,
    attempts: Attempts,
    max_memory_retries: int,
    max_crash_retries: int,
    backoff_seconds: float,
    workers: int = 1,
) -> Decision:
    sig = death.signal
    repeated_kill = sig == signal.SIGKILL and attempts.last_signal == signal.SIGKILL
    memory = death.memory or (repeated_kill and death.error is None)
    if memory:
        smaller = smaller_micro_batch(batch_size, grad_accumulation, workers)
        if smaller is None:
            return _fail(
                death,
                attempts,
                batch_size,
                grad_accumulation,
                f"even micro-batch {workers} does not fit"
                if workers > 1
                else "even micro-batch 1 does not fit",
            )
        if attempts.memory >= max_memory_retries:
            return _fail(
                death, attempts, batch_size, grad_accumulation, f"out of memory {attempts.memory + 1} times"
            )
        b, a = smaller
        done = Attempts(attempts.memory + 1, attempts.crashes, -(death.exitcode or 0))
        delay = backoff_seconds * 2 ** (done.memory + done.crashes - 1)
        reason = (
            f"{death.describe()} at micro-batch {batch_size} x accumulation {grad_accumulation}: resuming from "
            f"the newest checkpoint with micro-batch {b} x accumulation {a} (same {b * a} rows per step; "
            f"memory retry {done.memory} of {max_memory_retries}) in {delay:.0f} s"
        )
        return Decision(True, b, a, delay, reason, done, True)
    if death.killed:
        if attempts.crashes >= max_crash_retries:
            return _fail(
                death, attempts, batch_size, grad_accumulation, f"killed {attempts.crashes + 1} times"
            )
        done = Attempts(attempts.memory, attempts.crashes + 1, -(death.exitcode or 0))
        delay = backoff_seconds * 2 ** (done.memory + done.crashes - 1)
        reason = (
            f"{death.describe()}: resuming from the newest checkpoint (retry {done.crashes} of "
            f"{max_crash_retries}) in {delay:.0f} s"
        )
        return Decision(True, batch_size, grad_accumulation, delay, reason, done, False)
    return Decision(False, batch_size, grad_accumulation, 0.0, death.describe(), attempts, False)


def _fail(death: Death, attempts: Attempts, batch: int, accumulation: int, why: str) -> Decision:
    reason = (
        f"{death.describe()} at micro-batch {batch} x accumulation {accumulation}; {why}, giving up "
        "(lower batch_size or max_seq_length, enable grad_checkpoint, or set memory_budget_gb)"
        if death.memory or death.signal == signal.SIGKILL
        else f"{death.describe()}; {why}, giving up"
    )
    return Decision(False, batch, accumulation, 0.0, reason, attempts, death.memory)
