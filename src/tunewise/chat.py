"""`tunewise chat`: talk to a tuned run (base + adapter) or any model, one prompt or a loop."""

from __future__ import annotations

from rich.text import Text

from .data.template import fold_system
from .device import pick_device
from .evaluate.compare import load_tuned
from .evaluate.generate import generate
from .model.load import load_model, load_tokenizer, resolve_model
from .rundir import RunDir


def load_for_chat(target: str, device: str = "auto"):
    """A run directory (its adapter on its base) or a model name/directory; and whether the run
    folds the system prompt into the first user turn (data.fold_system_prompt)."""
    if RunDir(target).is_tuned_run():
        model, tokenizer, config = load_tuned(target, device=device)
        return model, tokenizer, config.data.fold_system_prompt
    source = resolve_model(target)
    return load_model(source, device=pick_device(device)), load_tokenizer(source), False


def reply(model, tokenizer, history: list[dict], max_new_tokens: int = 256, fold: bool = False) -> str:
    history = fold_system(history) if fold else history
    return generate(model, tokenizer, [history], max_new_tokens=max_new_tokens, batch_size=1)[0]


def chat_loop(model, tokenizer, system: str | None, console, max_new_tokens: int = 256, fold: bool = False) -> None:
    history = [{"role": "system", "content": system}] if system else []
    console.print("[dim]empty line or Ctrl-D to quit; /reset clears the conversation[/dim]")
    while True:
        try:
            text = console.input("[bold green]you> [/]")
        except EOFError:
            break
        if not text.strip():
            break
        if text.strip() == "/reset":
            history = history[:1] if system else []
            continue
        history.append({"role": "user", "content": text})
        answer = reply(model, tokenizer, history, max_new_tokens, fold)
        history.append({"role": "assistant", "content": answer})
        console.print(Text.assemble(("model> ", "bold blue"), answer))  # model text is never markup
