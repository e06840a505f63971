"""A word-level tokenizer for the world's compact format.

Every name part, relation noun and marker is one token, so copying a name from a document is
copying two tokens: the copy-friendly tokenization the small model needs to read instead of
memorize. It is a `PreTrainedTokenizerFast`, saved and loaded with the usual Hugging Face calls.
"""

from __future__ import annotations

from collections.abc import Iterable

from tokenizers import Tokenizer, decoders, models, pre_tokenizers
from transformers import PreTrainedTokenizerFast

from cls_ray.world.core import BASE_RELATIONS, NAME_PARTS, Relation

SPECIALS = ["[PAD]", "[UNK]", "[BOS]", "[EOS]"]
MARKERS = ["question:", "doc:", "step:"]
FUNCTION_WORDS = ["what", "is", "the", "of", "answer", "?", ".", ","]


def world_vocabulary(relations: Iterable[Relation] = BASE_RELATIONS.values()) -> list[str]:
    """Every token of the world's format; `relations`: the world's (`World.relations`), so a
    skill stream's nouns are words the model can learn."""
    words = SPECIALS + MARKERS + FUNCTION_WORDS
    words += [w for r in relations for w in r.noun.split()]
    words += NAME_PARTS.all_words()
    seen: set[str] = set()
    return [w for w in words if not (w in seen or seen.add(w))]


def build_world_tokenizer(
    relations: Iterable[Relation] = BASE_RELATIONS.values(),
) -> PreTrainedTokenizerFast:
    vocab = {w: i for i, w in enumerate(world_vocabulary(relations))}
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tok.decoder = decoders.WordPiece(prefix="##", cleanup=False)  # joins words with spaces
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        pad_token="[PAD]",
        unk_token="[UNK]",
        bos_token="[BOS]",
        eos_token="[EOS]",
        padding_side="left",
        clean_up_tokenization_spaces=False,
    )
