"""Tasks: the `Task` protocol and its implementations (the arithmetic testbed, a user's task file)."""
from scalelab.tasks.base import Task, Verdict
from scalelab.tasks.files import FileProblem, FileTask, load_task

__all__ = ["FileProblem", "FileTask", "Task", "Verdict", "load_task"]
