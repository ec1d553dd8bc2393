"""Interrupting a long job at a given step, to test that it resumes (an ``on_step`` callback)."""


class Interrupted(Exception):
    """Raised by :func:`interrupt_at`'s callback: stands for a job killed mid-run."""


def interrupt_at(step):
    """An ``on_step(step, loss)`` callback that raises :class:`Interrupted` once ``step`` steps are done."""

    def on_step(done, loss):
        if done == step:
            raise Interrupted(f"interrupted at step {done}")

    return on_step
