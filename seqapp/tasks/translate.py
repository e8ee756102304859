"""Translation: a recurrent encoder-decoder, with optional attention, on sentence pairs.

Data is a TSV file of ``source<TAB>target`` pairs (extra columns ignored). The pairs are
grouped by source sentence, the groups shuffled with a fixed seed and split into train /
val / test, so that every translation of one source falls in the same split. Training
uses teacher forcing: the decoder reads ``<s> target`` and learns ``target </s>``.
Translation runs the encoder once and the decoder one token per step (greedy or beam
search, see ``translate_decoding``); evaluation scores BLEU and chrF with sacrebleu.
"""

from __future__ import annotations

import json as json_module
import math
import re
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from seqapp import datafiles, litert, sampling
from seqapp.config import Config, ModelConfig, setting
from seqapp.errors import SeqappError
from seqapp.files import COUNT, INTEGER, TEXT, list_of
from seqapp.layers import state_size
from seqapp.plots import attention_heatmap
from seqapp.runs import Run
from seqapp.tasks.base import (
    JSON_OUTPUT,
    METRIC,
    TOKENIZER_FIELDS,
    Objective,
    PredictOption,
    Splits,
    Task,
    cut_notes,
    figure,
    format_nested,
    log,
)
from seqapp.tasks.translate_decoding import Decoding, Hypothesis, KerasTranslator, LiteRTTranslator, Translator
from seqapp.tasks.translate_model import (
    LITERT_ENCODER,
    LITERT_STEP,
    decoder_units,
    export_litert,
    inference_models,
    memory_count,
    seq2seq_layers,
    trained_inference_models,
    training_model,
    vocab_sizes,
)
from seqapp.text import (
    PAD_ID,
    SUBWORD_MODEL_HELP,
    SUBWORD_MODELS,
    SUBWORD_VOCAB_HELP,
    SUBWORD_VOCAB_RANGE,
    SUBWORD_VOCAB_SIZE,
    WORD_PATTERN,
    Tokenizer,
    pad,
)

DEFAULT_PAIRS = "pairs.tsv"
LENGTH_PENALTY_RANGE = (0.0, 5.0)  # model.length_penalty's range, and --length-penalty's
EXAMPLES = 5
EPOCH_SOURCES = 4  # validation sources translated after each epoch, for TensorBoard
# The punctuation spacing learned from the targets (spacing_rules): tokens written with or without a space.
SPACING_RULES = ("after_no_space", "before_no_space", "after_space", "before_space")

# A split is a list of (source sentence, [its reference translations]).
Groups = list[tuple[str, list[str]]]


@dataclass
class TranslateDataConfig:
    """Where the sentence pairs come from, how they are split, limited and tokenized."""

    path: str | None = setting(None, "TSV file, source<TAB>target per line (--data); null: the bundled pairs")
    level: str = setting("word", "tokens: words and punctuation marks, characters, or SentencePiece subwords "
                         "(one vocabulary per language, see data.vocab_size)", choices=("word", "char", "subword"))
    lower_source: bool = setting(True, "lower-case the source; the target keeps its case (BLEU is case-sensitive)")
    max_len: int = setting(20, "pairs with more tokens on either side are skipped; decoding stops here (level "
                           "subword: words are counted, and decoding stops after as many subwords as the "
                           "longest training sentence has)", min=1)
    max_pairs: int | None = setting(None, "use at most this many pairs (whole source groups, after the "
                                    "shuffle); null: all", min=1)
    max_vocab: int | None = setting(None, "vocabulary size per language, specials included; null: all "
                                    "(level char and word)", min=5)
    vocab_size: int = setting(SUBWORD_VOCAB_SIZE, SUBWORD_VOCAB_HELP + "; per language", **SUBWORD_VOCAB_RANGE)
    subword_model: str = setting("unigram", SUBWORD_MODEL_HELP, choices=SUBWORD_MODELS)
    val_fraction: float = setting(0.1, "share of distinct source sentences held out for validation",
                                  min=0.0, max=0.5, high_open=True)
    test_fraction: float = setting(0.1, "share of distinct source sentences held out for the test",
                                   min=0.0, max=0.5, high_open=True)
    split_seed: int = setting(0, "seed of the shuffle before the split by source sentence", min=0)


@dataclass
class TranslateModelConfig(ModelConfig):
    """The shared recurrent settings plus attention and decoding."""

    attention: str = setting("bahdanau", "attention over the encoder outputs", choices=("none", "luong", "bahdanau"))
    luong_score: str = setting("general", "Luong attention score: dot, or general (a learned key projection)",
                               choices=("dot", "general"))
    beam: int = setting(5, "beam width that evaluate reports beside greedy decoding", min=1)
    length_penalty: float = setting(1.0, "beam search ranks by log-probability / length ** this; 0: none",
                                    min=LENGTH_PENALTY_RANGE[0], max=LENGTH_PENALTY_RANGE[1])


class Translate(Task):
    """Sequence to sequence: translate sentences with an encoder-decoder network."""

    name: ClassVar[str] = "translate"
    summary: ClassVar[str] = "encoder-decoder with attention on sentence pairs; BLEU / chrF, greedy and beam search"
    DataConfig: ClassVar[type] = TranslateDataConfig
    ModelConfig: ClassVar[type] = TranslateModelConfig
    predict_options: ClassVar[tuple[PredictOption, ...]] = (
        PredictOption("beam", int, "Beam width for decoding (1 = greedy, the default)."),
        PredictOption("attention_plot", Path, "Write the first input's attention heat map to this PNG."),
        JSON_OUTPUT,
        PredictOption("n_best", int, "Print the N best translations of each input, best first, with their scores "
                                     "(beam search at least N wide; --json: a ranked 'hypotheses' list)."),
        PredictOption("length_penalty", float, "Rank beam hypotheses by log-probability / length ** A, from 0 (none) "
                                               "to 5 (default: the run's model.length_penalty)."),
        PredictOption("max_len", int, "Stop each translation after at most N tokens (default and most: the "
                                      "run's data.max_len)."),
        PredictOption("no_repeat_ngram", int, "Never repeat an n-gram of N tokens within one output."),
        PredictOption("replace_unk", bool, "Let <unk> be produced and replace it by the source token with the "
                                           "highest attention weight (attention runs only)."),
    )
    preprocessing_fields: ClassVar[dict] = {
        "source_tokenizer": TOKENIZER_FIELDS, "target_tokenizer": TOKENIZER_FIELDS, "max_len": COUNT,
        "target_spacing?": {f"{rule}?": list_of(TEXT) for rule in SPACING_RULES}}
    metrics_fields: ClassVar[dict] = {
        "greedy?": {"bleu": METRIC}, "signatures?": {"bleu": TEXT, "chrf": TEXT},
        "if greedy": {"split": TEXT, "beam": {"bleu": METRIC, "width": INTEGER},
                      "baseline_copy_source": {"bleu": METRIC}}}
    tiny: ClassVar[dict] = {
        "set": ["model.units=8", "model.embedding_dim=8", "data.max_pairs=60", "model.beam=2",
                "train.batch_size=16"],
        "inputs": ["I am cold.", "hello"],
        "options": {"beam": 2},
    }

    # -- data -------------------------------------------------------------------------
    def load_data(self, cfg: Config) -> Splits:
        """Sentence pairs grouped by source, shuffled with ``split_seed``, split by source."""
        data = cfg.data
        path = data.path or datafiles.bundled(DEFAULT_PAIRS)
        pairs = keep_short(read_pairs(path), data.level, data.lower_source, data.max_len)
        groups = group_by_source(pairs)
        order = np.random.default_rng(data.split_seed).permutation(len(groups))
        groups = limit_pairs([groups[i] for i in order], data.max_pairs)
        return split_groups(groups, data.val_fraction, data.test_fraction)

    def fit_preprocessing(self, cfg: Config, splits: Splits) -> dict:
        sources = [source for source, _ in splits.train]
        targets = [target for _, references in splits.train for target in references]
        data = cfg.data
        size = data.vocab_size if data.level == "subword" else data.max_vocab
        source_tokenizer = Tokenizer(data.level, lower=data.lower_source, subword_model=data.subword_model)
        source_tokenizer.fit(sources, size, name="source subword vocabulary")
        target_tokenizer = Tokenizer(data.level, subword_model=data.subword_model).fit(
            targets, size, name="target subword vocabulary")
        max_len = data.max_len
        if data.level == "subword":  # data.max_len counted words; the model reads and writes subwords
            max_len = max([max_len] + [len(source_tokenizer.split(text)) for text in sources]
                          + [len(target_tokenizer.split(text)) for text in targets])
        return {
            "source_tokenizer": source_tokenizer.to_dict(),
            "target_tokenizer": target_tokenizer.to_dict(),
            "target_spacing": spacing_rules(targets, target_tokenizer),
            "max_len": max_len,
        }

    def datasets(self, cfg: Config, prep: dict, splits: Splits) -> tuple[Any, Any]:
        from seqapp.pipeline import make_dataset

        tokenizers = tokenizers_of(prep)
        x, y = teacher_forcing_arrays(splits.train, *tokenizers)
        train = make_dataset(x, y, cfg.train.batch_size, shuffle=True, seed=cfg.train.random_seed)
        if not splits.val:
            return train, None
        val_x, val_y = teacher_forcing_arrays(splits.val, *tokenizers)
        return train, make_dataset(val_x, val_y, cfg.train.batch_size, shuffle=False)

    # -- model ------------------------------------------------------------------------
    def build_model(self, cfg: Config, prep: dict) -> Any:
        return training_model(seq2seq_layers(cfg.model, *vocab_sizes(prep)))

    def objective(self, cfg: Config, prep: dict) -> Objective:
        import keras

        return Objective(loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True, ignore_class=PAD_ID))

    def translator(self, run: Any, engine: str = "tf") -> Translator:
        """The run's step-by-step translator on ``engine`` (built once per run and process)."""
        key = ("translate.translator", engine)
        if key not in run.cache:
            run.cache[key] = make_translator(run, engine)
        return run.cache[key]

    def engine(self, run: Any, requested: str) -> str:
        return litert.choose(run.path, LITERT_STEP, requested)

    def export(self, run: Any, folder: Path) -> None:
        export_litert(*trained_inference_models(run), folder)

    def serving_module(self, run: Any) -> Any:
        """``seqapp export``: raw sentences in, greedy translations out (see ``translate_serving``)."""
        from seqapp.tasks.translate_serving import TranslateServing

        return TranslateServing(run)

    # -- evaluation -------------------------------------------------------------------
    def evaluate(self, run: Any, splits: Splits, engine: str = "tf", errors: int = 0) -> dict:
        """BLEU and chrF of greedy and beam decoding on the test sources, beside copying the source;
        the ``errors`` sources whose beam translation has the lowest sentence BLEU (then chrF)."""
        split, groups = held_out(splits)
        sources = [source for source, _ in groups]
        references = [refs for _, refs in groups]
        translator = self.translator(run, engine)
        width = run.config.model.beam
        greedy = translator.translate(sources, beam=1)
        beamed = translator.translate(sources, beam=width) if width > 1 else greedy
        worst = {"worst": worst_translations(sources, beamed, references, errors)} if errors else {}
        return {
            "split": split,
            "sentences": len(sources),
            "references": sum(len(refs) for refs in references),
            "greedy": bleu_chrf(greedy, references),
            "beam": {"width": width, **bleu_chrf(beamed, references)},
            "baseline_copy_source": bleu_chrf(sources, references),
            "signatures": sacrebleu_signatures(references),
            "data": split_sizes(splits),
            "examples": [{"source": source, "greedy": g, "beam": b, "references": refs}
                         for source, g, b, refs in list(zip(sources, greedy, beamed, references))[:EXAMPLES]],
            **worst,
        }

    def new_data(self, run: Any, path: Path) -> Splits:
        """The pairs of a ``source<TAB>target`` file, grouped by source, as the test split; pairs
        longer than the run's data.max_len are left out with a warning, as training leaves them out."""
        data = run.config.data
        pairs = read_pairs(path)
        kept = keep_short(pairs, data.level, data.lower_source, data.max_len, required=False)
        if not kept:
            raise SeqappError(f"no pair of {path} has at most {data.max_len} tokens on both sides (the run's "
                              "data.max_len, beyond which it was not trained); give shorter sentences")
        if len(kept) < len(pairs):
            log.warning(f"{len(pairs) - len(kept)} of {len(pairs)} pairs of {path} have more than the run's "
                        f"data.max_len of {data.max_len} tokens on a side and are left out, as in training")
        return Splits(train=[], val=[], test=group_by_source(kept), source=str(path))

    def format_worst(self, records: list[dict]) -> list[str]:
        lines = []
        for record in records:
            lines += [f"BLEU {record['bleu']:.2f}  chrF {record['chrf']:.2f}  {record['source']}",
                      f"    translation: {record['translation']}",
                      f"    references:  {' | '.join(record['references'])}"]
        return lines

    def headline(self, metrics: dict) -> str:
        if "greedy" not in metrics:
            return ""
        beam = metrics["beam"]
        return (f"{metrics['split']} BLEU {figure(metrics['greedy']['bleu'], '.1f')} greedy, "
                f"{figure(beam['bleu'], '.1f')} beam {beam['width']} "
                f"(copy source {figure(metrics['baseline_copy_source']['bleu'], '.1f')})")

    def format_metrics(self, metrics: dict) -> list[str]:
        if "greedy" not in metrics:
            return format_nested(metrics)
        lines = [f"{metrics['split']} split: {metrics['sentences']} source sentences, "
                 f"{metrics['references']} reference translations",
                 f"{'':<14}{'BLEU':>7}{'chrF':>7}{'BLEU 1-ref':>12}{'chrF 1-ref':>12}"]
        rows = {"greedy": metrics["greedy"], f"beam {metrics['beam']['width']}": metrics["beam"],
                "copy source": metrics["baseline_copy_source"]}
        for label, scores in rows.items():
            lines.append(f"{label:<14}{scores['bleu']:>7.2f}{scores['chrf']:>7.2f}"
                         f"{scores['bleu_1ref']:>12.2f}{scores['chrf_1ref']:>12.2f}")
        lines.append("(BLEU / chrF against all references of each source; 1-ref: the first reference only)")
        if "signatures" in metrics:
            lines.append(f"sacrebleu: BLEU {metrics['signatures']['bleu']}, chrF {metrics['signatures']['chrf']}")
        lines.append("examples:")
        for example in metrics.get("examples", []):
            lines += [f"  {example['source']}", f"    greedy:     {example['greedy']}",
                      f"    beam:       {example['beam']}", f"    references: {' | '.join(example['references'])}"]
        sizes = metrics.get("data", {})
        lines.append("data: " + ", ".join(f"{split} {n['sources']} sources / {n['pairs']} pairs"
                                          for split, n in sizes.items()))
        if "epochs_trained" in metrics:
            lines.append(f"epochs trained: {metrics['epochs_trained']}")
        return lines

    # -- prediction -------------------------------------------------------------------
    def check_inputs(self, inputs: list[str], beam: int | None = None, n_best: int | None = None,
                     length_penalty: float | None = None, max_len: int | None = None,
                     no_repeat_ngram: int | None = None, **opts: Any) -> None:
        if not inputs:
            raise SeqappError('nothing to translate; give sentences, e.g. seqapp predict "I am cold."')
        if beam is not None and beam < 1:
            raise SeqappError(f"--beam {beam} must be at least 1 (1 is greedy decoding)")
        check_decoding(beam, n_best, length_penalty, max_len, no_repeat_ngram)

    def check_run_options(self, run: Any, max_len: int | None = None, replace_unk: bool | None = None,
                          attention_plot: Path | None = None, **opts: Any) -> None:
        """``--max-len`` within the run's ``max_len``; ``--replace-unk`` and ``--attention-plot``
        need attention (read from the run's files: no TensorFlow)."""
        if max_len is not None and max_len > run.preprocessing["max_len"]:
            raise SeqappError(f"--max-len {max_len} is more than this run's max_len of {run.preprocessing['max_len']} "
                              "tokens (the longest translation it was trained on); give at most that")
        for flag, given in (("--replace-unk", replace_unk), ("--attention-plot", attention_plot)):
            if given and not memory_count(run.config.model):
                raise SeqappError(f"{flag} needs a run trained with attention; "
                                  "train with --set model.attention=luong or bahdanau")

    def predict(self, run: Any, inputs: list[str], beam: int | None = None, attention_plot: Path | None = None,
                json: bool | None = None, engine: str = "tf", n_best: int | None = None,
                length_penalty: float | None = None, max_len: int | None = None, no_repeat_ngram: int | None = None,
                replace_unk: bool | None = None) -> list[str]:
        """One translation per input sentence (a JSON object per line with ``--json``), or with
        ``n_best`` above 1 that many ranked lines (``score<TAB>text``; in JSON a ``hypotheses``
        list); the ``litert`` engine gives the same output, attention plot included, without TensorFlow."""
        self.check_inputs(inputs, beam=beam, n_best=n_best, length_penalty=length_penalty, max_len=max_len,
                          no_repeat_ngram=no_repeat_ngram)
        self.check_run_options(run, max_len=max_len, replace_unk=replace_unk, attention_plot=attention_plot)
        n_best = n_best or 1
        width = n_best if beam is None else beam
        decoding = Decoding(beam=width, n_best=n_best, length_penalty=length_penalty, max_len=max_len,
                            no_repeat_ngram=no_repeat_ngram, replace_unk=bool(replace_unk))
        translator = self.translator(run, engine)
        token_lists = [translator.source_tokenizer.split(text) for text in inputs]
        warn_unknown(translator.source_tokenizer, [tokens[:translator.max_len] for tokens in token_lists])
        notes = cut_notes([len(tokens) for tokens in token_lists], translator.max_len, "translated",
                          "; give one sentence per input")
        ranked = translator.decode_ranked(inputs, decoding)
        found = [hypotheses[0] for hypotheses in ranked]
        if attention_plot is not None:
            plot_attention(translator, inputs[0], found[0], Path(attention_plot))
            log.info(f"wrote attention plot of {inputs[0]!r} to {attention_plot}")
        copy_from = inputs if decoding.replace_unk else [None] * len(inputs)
        texts = [[translator.text(hyp, source) for hyp in hypotheses] for hypotheses, source in zip(ranked, copy_from)]
        if not json:
            if n_best == 1:
                return [options[0] for options in texts]
            return [f"{hyp.score:.4f}\t{text}" for hypotheses, options in zip(ranked, texts)
                    for hyp, text in zip(hypotheses, options)]
        lines = []
        for source, hypotheses, options, note in zip(inputs, ranked, texts, notes):
            record = {"source": source, "translation": options[0], "log_prob": round(hypotheses[0].log_prob, 4),
                      "beam": width}
            if n_best > 1:
                record["hypotheses"] = [{"text": text, "score": round(hyp.score, 4), "log_prob": round(hyp.log_prob, 4)}
                                        for hyp, text in zip(hypotheses, options)]
            lines.append(json_module.dumps({**record, **({"warning": note} if note else {})}, ensure_ascii=False))
        return lines

    def plots(self, run: Any, splits: Splits, folder: Any) -> None:
        """The attention heat map of the first held-out sentence (attention models only)."""
        translator = self.translator(run)
        if not translator.has_attention:
            return
        _, groups = held_out(splits)
        source = groups[0][0]
        plot_attention(translator, source, translator.decode_ids([source])[0], Path(folder) / "attention.png")

    def epoch_sample(self, cfg: Config, prep: dict, splits: Splits) -> Any:
        """The greedy translations of the first EPOCH_SOURCES validation sources (training ones when
        none are held out), as a Markdown table beside their references. The encoder and step
        models are built once; each call copies the trained weights into them."""
        groups = (splits.val or splits.train)[:EPOCH_SOURCES]
        if not groups:
            return None
        layers = seq2seq_layers(cfg.model, *vocab_sizes(prep))
        twin = training_model(layers)
        translator = make_translator(Run(Path(), cfg, prep), models=inference_models(layers, cfg.model))

        def sample(model: Any) -> str:
            twin.set_weights(model.get_weights())
            rows = zip(groups, translator.translate([source for source, _ in groups], beam=1))
            return "| source | reference | greedy translation |\n|---|---|---|\n" + "\n".join(
                f"| {markdown_cell(source)} | {markdown_cell(refs[0])} | {markdown_cell(text)} |"
                for (source, refs), text in rows)

        return sample


def check_decoding(beam: int | None, n_best: int | None, length_penalty: float | None, max_len: int | None,
                   no_repeat_ngram: int | None) -> None:
    """Refuse decoding options that cannot work, whatever the run (cheap: before TensorFlow starts)."""
    if n_best is not None and n_best < 1:
        raise SeqappError(f"--n-best {n_best} must be at least 1; give the number of translations per input, "
                          "e.g. --n-best 5")
    if n_best is not None and beam is not None and beam < n_best:
        raise SeqappError(f"--n-best {n_best} needs a beam at least as wide; give --beam {n_best} or more, "
                          "or leave --beam out (it is then N)")
    low, high = LENGTH_PENALTY_RANGE
    if length_penalty is not None and not (math.isfinite(length_penalty) and low <= length_penalty <= high):
        raise SeqappError(f"--length-penalty {length_penalty} must be from {low:g} (no length normalisation) to "
                          f"{high:g}; 1 divides the log-probability by the length")
    if max_len is not None and max_len < 1:
        raise SeqappError(f"--max-len {max_len} must be at least 1; give the most tokens per translation, "
                          "e.g. --max-len 10")
    sampling.check_no_repeat_ngram(no_repeat_ngram)


# -- data ---------------------------------------------------------------------------------
def read_pairs(path: str | Path) -> list[tuple[str, str]]:
    """``(source, target)`` from a TSV file; blank lines skipped, extra columns ignored."""
    pairs = []
    for number, fields in datafiles.read_rows(path, "tsv"):
        if len(fields) < 2 or not fields[0].strip() or not fields[1].strip():
            line = "\t".join(fields)
            shown = line if len(line) <= 60 else line[:57] + "..."
            raise SeqappError(f"{path} line {number} is not 'source<TAB>target' ({shown!r}); "
                              "separate the sentence and its translation with one tab")
        pairs.append((fields[0].strip(), fields[1].strip()))
    return pairs


def keep_short(pairs: list[tuple[str, str]], level: str, lower_source: bool, max_len: int,
               required: bool = True) -> list[tuple[str, str]]:
    """The pairs whose source and target both have at most ``max_len`` tokens (words at level subword:
    its vocabulary is trained later, on the training split); none kept is an error when ``required``."""
    level = "word" if level == "subword" else level
    source_tokens, target_tokens = Tokenizer(level, lower=lower_source), Tokenizer(level)
    kept = [(source, target) for source, target in pairs
            if len(source_tokens.split(source)) <= max_len and len(target_tokens.split(target)) <= max_len]
    if not kept and required:
        raise SeqappError(f"no sentence pair has at most data.max_len={max_len} tokens on both sides; "
                          "raise data.max_len")
    return kept


def group_by_source(pairs: list[tuple[str, str]]) -> Groups:
    """Each distinct source with its distinct translations, in order of first appearance."""
    groups: dict[str, list[str]] = {}
    for source, target in pairs:
        references = groups.setdefault(source, [])
        if target not in references:
            references.append(target)
    return list(groups.items())


def limit_pairs(groups: Groups, max_pairs: int | None) -> Groups:
    """The first groups holding at most ``max_pairs`` pairs (at least one group)."""
    if max_pairs is None:
        return groups
    kept, count = [], 0
    for source, references in groups:
        if kept and count + len(references) > max_pairs:
            break
        kept.append((source, references))
        count += len(references)
    return kept


def split_groups(groups: Groups, val_fraction: float, test_fraction: float) -> Splits:
    """Test first, then validation, then train, by number of source sentences."""
    n_test, n_val = round(len(groups) * test_fraction), round(len(groups) * val_fraction)
    if len(groups) - n_test - n_val < 1:
        raise SeqappError(f"only {len(groups)} distinct source sentences: too few to split; "
                          "give more pairs or lower data.val_fraction / data.test_fraction")
    return Splits(train=groups[n_test + n_val:], val=groups[n_test:n_test + n_val], test=groups[:n_test])


def split_sizes(splits: Splits) -> dict:
    """Source sentences and pairs in each split (the test split alone for new data)."""
    parts = (("test", splits.test),) if splits.source else (("train", splits.train), ("val", splits.val),
                                                            ("test", splits.test))
    return {name: {"sources": len(groups), "pairs": sum(len(refs) for _, refs in groups)} for name, groups in parts}


def worst_translations(sources: list[str], translations: list[str], references: list[list[str]],
                       count: int) -> list[dict]:
    """``evaluate --errors``: the ``count`` sources whose translation has the lowest sentence BLEU
    against its references (then the lowest chrF), worst first."""
    import sacrebleu

    scores = [(sacrebleu.sentence_bleu(text, refs).score, sacrebleu.sentence_chrf(text, refs).score)
              for text, refs in zip(translations, references)]
    order = sorted(range(len(scores)), key=lambda i: scores[i])[:count]
    return [{"source": sources[i], "translation": translations[i], "references": references[i],
             "bleu": round(scores[i][0], 2), "chrf": round(scores[i][1], 2)} for i in order]


def held_out(splits: Splits) -> tuple[str, Groups]:
    """The split to report on: test, else val, else (nothing held out) train."""
    for name in ("test", "val", "train"):
        groups = getattr(splits, name)
        if groups:
            return name, groups
    raise SeqappError("no sentence pairs to evaluate on")


def tokenizers_of(prep: dict) -> tuple[Tokenizer, Tokenizer]:
    """The source and target tokenizers saved in a run's preprocessing."""
    return Tokenizer.from_dict(prep["source_tokenizer"]), Tokenizer.from_dict(prep["target_tokenizer"])


def teacher_forcing_arrays(groups: Groups, source_tokenizer: Tokenizer,
                           target_tokenizer: Tokenizer) -> tuple[dict, np.ndarray]:
    """Padded model inputs ``{source, target_in = <s> target}`` and outputs ``target </s>``."""
    pairs = [(source, target) for source, references in groups for target in references]
    source_ids = pad([source_tokenizer.encode(source) for source, _ in pairs])
    target_in = pad([target_tokenizer.encode(target, add_start=True) for _, target in pairs])
    target_out = pad([target_tokenizer.encode(target, add_end=True) for _, target in pairs])
    return {"source": source_ids, "target_in": target_in}, target_out


def bleu_chrf(hypotheses: list[str], references: list[list[str]]) -> dict:
    """Corpus BLEU and chrF (sacrebleu) against all references and against the first one."""
    import sacrebleu

    most = max(len(refs) for refs in references)
    streams = [[refs[i] if i < len(refs) else None for refs in references] for i in range(most)]
    first = [[refs[0] for refs in references]]
    return {
        "bleu": round(sacrebleu.corpus_bleu(hypotheses, streams).score, 2),
        "chrf": round(sacrebleu.corpus_chrf(hypotheses, streams).score, 2),
        "bleu_1ref": round(sacrebleu.corpus_bleu(hypotheses, first).score, 2),
        "chrf_1ref": round(sacrebleu.corpus_chrf(hypotheses, first).score, 2),
    }


def sacrebleu_signatures(references: list[list[str]]) -> dict:
    """sacrebleu's signatures of the BLEU and chrF figures against all references (its settings, the
    number of references and its version: what makes the figures comparable with others'; the
    ``_1ref`` figures have the same ones with ``nrefs:1``)."""
    import sacrebleu

    most = max(len(refs) for refs in references)
    streams = [[refs[i] if i < len(refs) else None for refs in references] for i in range(most)]
    signatures = {}
    for name, metric in (("bleu", sacrebleu.BLEU()), ("chrf", sacrebleu.CHRF())):
        metric.corpus_score([refs[0] for refs in references], streams)  # the signature is known once it has scored
        signatures[name] = str(metric.get_signature())
    return signatures


def spacing_rules(texts: list[str], tokenizer: Tokenizer) -> dict:
    """Punctuation tokens that the training targets usually write with / without a space around them.

    Languages differ ("Va !" in French, "Go!" in English; "est-ce" never spaced), so the
    spacing of punctuation is learned from the data rather than fixed.
    """
    if tokenizer.level != "word":
        return {}
    votes = {"before": Counter(), "after": Counter()}
    for text in texts:
        text = tokenizer.standardize(text)
        for match in WORD_PATTERN.finditer(text):
            if re.match(r"\w", match.group()):
                continue
            if match.start() > 0:
                votes["before"][match.group()] += 1 if text[match.start() - 1].isspace() else -1
            if match.end() < len(text):
                votes["after"][match.group()] += 1 if text[match.end()].isspace() else -1
    rules = {}
    for side, counts in votes.items():
        rules[f"{side}_space"] = sorted(token for token, vote in counts.items() if vote > 0)
        rules[f"{side}_no_space"] = sorted(token for token, vote in counts.items() if vote < 0)
    return rules


def detokenizer(tokenizer: Tokenizer, rules: dict) -> Any:
    """A function joining target tokens with the learned punctuation spacing (see spacing_rules)."""
    if tokenizer.level != "word" or not rules:
        return tokenizer.join
    rule_sets = {key: set(rules.get(key, [])) for key in SPACING_RULES}

    def spaced(previous: str, token: str) -> bool:
        if previous in rule_sets["after_no_space"] or token in rule_sets["before_no_space"]:
            return False
        if previous in rule_sets["after_space"] or token in rule_sets["before_space"]:
            return True
        return len(tokenizer.join([previous, token])) > len(previous) + len(token)

    def join(tokens: list[str]) -> str:
        pieces = tokens[:1]
        for previous, token in zip(tokens, tokens[1:]):
            pieces.append((" " if spaced(previous, token) else "") + token)
        return "".join(pieces)

    return join


def warn_unknown(tokenizer: Tokenizer, token_lists: list[list[str]]) -> None:
    """Tell the user which input words (of the tokens translated) the model has never seen."""
    unknown = list(dict.fromkeys(token for tokens in token_lists for token in tokens if token not in tokenizer.index))
    if unknown:
        shown = ", ".join(repr(token) for token in unknown[:10])
        log.warning(f"{len(unknown)} input token(s) not in the source vocabulary ({shown}); read as <unk>")


def plot_attention(translator: Translator, source: str, hypothesis: Hypothesis, path: Path) -> None:
    """Heat map of one translation's attention, source tokens x output tokens."""
    source_tokens = translator.source_tokenizer.split(source)[:translator.max_len] or ["<pad>"]  # as source_ids
    output_tokens = translator.target_tokenizer.tokens(hypothesis.ids, skip_special=False)
    attention_heatmap(source_tokens, output_tokens, hypothesis.attention, path, translator.text(hypothesis))


def markdown_cell(text: str) -> str:
    """``text`` as one cell of a Markdown table: its pipes escaped, its line breaks spaces."""
    return text.replace("\\", "\\\\").replace("|", "\\|").replace("\n", " ") or " "


def make_translator(run: Any, engine: str = "tf", models: tuple[Any, Any] | None = None) -> Translator:
    """The run's translator: Keras models sharing the trained weights (``tf``; or the given encoder
    and step ``models``), or the LiteRT graphs saved with the run (``litert``, which reads neither
    model.keras nor TensorFlow)."""
    model_cfg = run.config.model
    source_tokenizer, target_tokenizer = tokenizers_of(run.preprocessing)
    settings = (source_tokenizer, target_tokenizer, run.preprocessing["max_len"], model_cfg.length_penalty,
                memory_count(model_cfg), detokenizer(target_tokenizer, run.preprocessing.get("target_spacing", {})))
    if engine == "litert":
        return LiteRTTranslator(litert.load(run.path, LITERT_ENCODER), litert.load(run.path, LITERT_STEP), *settings)
    encoder, step = models or trained_inference_models(run)
    units = decoder_units(model_cfg)
    return KerasTranslator(encoder, step, *settings, memory_size=units,
                           state_sizes=[units] * (state_size(model_cfg.cell) * model_cfg.layers))
