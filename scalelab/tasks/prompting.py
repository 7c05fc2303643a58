"""How a task file's question becomes the text a model reads.

Two ways, chosen by `chat` (auto|on|off):

- chat: the tokenizer's own chat template (`apply_chat_template(..., add_generation_prompt=True)`)
  over messages [system?] + [user: shot question, assistant: shot solution]*K + [user: question].
  `auto` uses it when the tokenizer has a template; `on` without one is an error.
- plain: the tokenizer's BOS text where it adds one by default, `system` and a blank line, then each shot as the template followed by its solution and a
  blank line, then the template for the question. The default template, "Question: {prompt}\\nAnswer:",
  is the few-shot layout of the GSM8K and MMLU evaluations in EleutherAI's lm-evaluation-harness.

A template is a Python format string with one field, `{prompt}`; any other `{` or `}` must be doubled.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from scalelab.errors import ConfigError

DEFAULT_TEMPLATE = "Question: {prompt}\nAnswer:"
CHAT_MODES = ("auto", "on", "off")


def check_template(template: str) -> str:
    import string

    try:
        names = {f for _, f, _, _ in string.Formatter().parse(template) if f is not None}
    except ValueError as e:
        raise ConfigError(f"--template {template!r}: {e} (write a literal brace as {{{{ or }}}})") from None
    if names != {"prompt"}:
        raise ConfigError(f"--template {template!r}: must contain {{prompt}} and no other field, found {sorted(names)}")
    return template


def has_chat_template(tokenizer: Any) -> bool:
    return tokenizer is not None and bool(getattr(tokenizer, "chat_template", None))


@dataclass(frozen=True)
class Prompter:
    """Renders a question, with optional system text and few-shot examples (question, solution)."""

    template: str = DEFAULT_TEMPLATE
    system: str | None = None
    shots: tuple[tuple[str, str], ...] = ()
    chat: str = "auto"
    tokenizer: Any = field(default=None, compare=False, hash=False)

    def __post_init__(self) -> None:
        check_template(self.template)
        if self.chat not in CHAT_MODES:
            raise ConfigError(f"--chat {self.chat!r}: choose one of {', '.join(CHAT_MODES)}")
        if self.chat == "on" and not has_chat_template(self.tokenizer):
            what = "no tokenizer was given" if self.tokenizer is None else "the tokenizer has no chat template"
            raise ConfigError(f"--chat on: {what}; use --chat auto or off")

    @property
    def bos(self) -> str:
        """The tokenizer's BOS text when it would add one itself (a Llama tokenizer's <s>): written into
        the plain prompt, so that every encoder reads it without special-token flags; a chat template
        writes its own (lm-evaluation-harness's convention)."""
        tok = self.tokenizer
        if tok is None or getattr(tok, "bos_token_id", None) is None or not getattr(tok, "bos_token", None):
            return ""
        try:
            ids = tok("a", add_special_tokens=True)["input_ids"]
        except Exception:  # a tokenizer that cannot encode "a" has no default BOS to speak of
            return ""
        return tok.bos_token if ids and ids[0] == tok.bos_token_id else ""

    @property
    def uses_chat(self) -> bool:
        return self.chat != "off" and has_chat_template(self.tokenizer)

    def render(self, question: str, context: tuple[tuple[str, str], ...] = ()) -> str:
        """The prompt for a question; `context` holds a problem's own (role, text) turns before it
        (an OpenAI-evals `input`): its system turns follow `system`, its user/assistant turns follow
        the few-shot examples, as more shots."""
        systems = [self.system] if self.system else []
        systems += [text for role, text in context if role == "system" and text.strip()]
        turns = [(role, text) for role, text in context if role != "system"]
        if self.uses_chat:
            messages = [{"role": "system", "content": "\n\n".join(systems)}] if systems else []
            for q, a in self.shots:
                messages += [{"role": "user", "content": q}, {"role": "assistant", "content": a}]
            messages += [{"role": "assistant" if role == "assistant" else "user", "content": text}
                         for role, text in turns]
            messages.append({"role": "user", "content": question})
            return self.tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        parts = [self.bos] if self.bos else []
        parts += ["\n\n".join(systems) + "\n\n"] if systems else []
        for q, a in self.shots:
            parts.append(self.template.format(prompt=q) + " " + a.strip() + "\n\n")
        for k, (role, text) in enumerate(turns):
            if role == "assistant":
                parts.append(" " + text.strip() + "\n\n")
            else:
                answered = k + 1 < len(turns) and turns[k + 1][0] == "assistant"
                parts.append(self.template.format(prompt=text) + ("" if answered else "\n\n"))
        parts.append(self.template.format(prompt=question))
        return "".join(parts)


def load_tokenizer(model_dir: str) -> Any:
    """The tokenizer saved with a model (a checkpoint or run directory holding tokenizer files)."""
    from pathlib import Path

    from scalelab.errors import InputError

    path = Path(model_dir)
    if not path.is_dir():
        raise InputError(f"--model {model_dir}: not a directory")
    candidates = [path] + sorted(p.parent for p in path.rglob("tokenizer_config.json"))
    for c in candidates:
        if (c / "tokenizer_config.json").is_file() or (c / "tokenizer.json").is_file():
            from scalelab.checkpoint import load_tokenizer

            return load_tokenizer(c)
    raise InputError(f"--model {model_dir}: no tokenizer files (tokenizer_config.json) found there")
