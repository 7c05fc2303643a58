"""Tasks: the `Task` protocol and its implementations (the arithmetic testbed, a user's task file)."""
from scalelab.tasks.base import Task, Verdict

__all__ = ["Task", "Verdict"]
