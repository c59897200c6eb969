"""`tunewise export gguf`: a run or merged model -> FILE.gguf (+ an Ollama Modelfile), checked.

A run directory is merged first (the same fp32 merge and parity check as `tunewise merge`) into a
temporary directory that is removed afterwards; keep a merged copy with `tunewise merge` to export
it several times. The GGUF is written beside its destination and renamed into place only after
llama.cpp has passed the checks in verify.py, so a failed check leaves no file that looks finished.
"""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

from ..data.formats import spec_of
from ..data.load import load_examples
from ..errors import TunewiseError
from ..evaluate.compare import load_run_config
from ..files import usual_mode
from ..model.load import load_tokenizer
from ..rundir import RunDir
from .gguf_model import TYPES, GgufInfo, family_of, read_config, refuse_sliding_window, write_gguf
from .gguf_vocab import adds_token, eos_ids
from .merge import Parity, merge
from .modelfile import Translation, translate, write_modelfile
from .verify import INSTALL_HINT, Report, available, verify


@dataclass
class Exported:
    path: Path
    info: GgufInfo
    report: Report | None = None
    modelfile: Path | None = None
    translation: Translation | None = None
    merge_parity: Parity | None = None


def modelfile_path(gguf_path: Path) -> Path:
    """model-q8_0.gguf -> model-q8_0.Modelfile, so exports of several types can share a directory."""
    return gguf_path.with_suffix(".Modelfile")


def data_system_prompt(run_dir: Path) -> str | None:
    """The system prompt every training example shared, if they shared one."""
    config = load_run_config(run_dir)
    if not Path(config.data.train).exists():  # moved since training: then there is nothing to carry over
        return None
    systems = {next((m["content"] for m in e.messages if m["role"] == "system"), None)
               for e in load_examples(config.data.train, spec_of(config.data))}
    return systems.pop() if len(systems) == 1 else None


def _check_args(out: Path, qtype: str, check: bool) -> None:
    if qtype not in TYPES:
        raise TunewiseError(f"--type {qtype!r}: choose one of {', '.join(TYPES)}")
    if out.suffix != ".gguf":
        raise TunewiseError(f"--out {out}: give a file name ending in .gguf")
    if out.is_dir():
        raise TunewiseError(f"--out {out} is a directory; give a file name ending in .gguf")
    if check and not available():
        raise TunewiseError(INSTALL_HINT)


def export_gguf(source: str | Path, out: str | Path, qtype: str = "f16", modelfile: bool = False,
                check: bool = True, device: str = "auto", log=print) -> Exported:
    source, out = Path(source), Path(out)
    _check_args(out, qtype, check)
    if RunDir(source).is_tuned_run():
        with tempfile.TemporaryDirectory(prefix="tunewise-merge-") as tmp:
            log(f"merging {source}'s adapter first (into a temporary directory; `tunewise merge` keeps a copy)")
            parity = merge(source, Path(tmp) / "merged", device=device)
            system = data_system_prompt(source)
            result = _export_model(Path(tmp) / "merged", out, qtype, modelfile, check, device, system, log,
                                   source.resolve().name)
            result.merge_parity = parity
            return result
    if not (source / "config.json").is_file():
        raise TunewiseError(f"{source} is neither a tunewise run directory (config.yaml and adapter/) nor a "
                            "model directory (config.json)")
    return _export_model(source, out, qtype, modelfile, check, device, None, log)


def _temp_sibling(out: Path) -> Path:
    """An empty file beside `out` (same file system, so the final rename is atomic) with a new
    file's usual permissions."""
    out.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(prefix=f".{out.name}-", suffix=".gguf", dir=out.parent)
    os.close(fd)
    usual_mode(name)
    return Path(name)


def _export_model(model_dir: Path, out: Path, qtype: str, modelfile: bool, check: bool, device: str,
                  system: str | None, log, name: str | None = None) -> Exported:
    family_of(read_config(model_dir), model_dir)  # refuse an unsupported family before any work
    refuse_sliding_window(model_dir)
    tokenizer = load_tokenizer(str(model_dir))
    # translate before writing anything: an untranslatable template fails in a second, not after the export
    translation = translate(tokenizer, adds_token(tokenizer, tokenizer.bos_token_id, True)) if modelfile else None
    tmp = _temp_sibling(out)
    try:
        log(f"writing {qtype} GGUF from {model_dir}")
        info = write_gguf(model_dir, tmp, qtype, tokenizer, name)
        result = Exported(out, info, translation=translation)
        if check:
            log("checking it with llama.cpp against transformers")
            result.report = verify(tmp, model_dir, tokenizer, qtype, info.vocab.eos_ids, device)
            if result.report.failures():
                raise TunewiseError("the GGUF does not match the model, so it was not kept: "
                                    + "; ".join(result.report.failures())
                                    + "\n" + "\n".join(result.report.lines()))
        os.replace(tmp, out)
    finally:
        tmp.unlink(missing_ok=True)
    if translation is not None:
        result.modelfile = modelfile_path(out)
        stops = tokenizer.convert_ids_to_tokens(eos_ids(model_dir, tokenizer))
        write_modelfile(result.modelfile, out, translation, stops, system or translation.system)
    return result
