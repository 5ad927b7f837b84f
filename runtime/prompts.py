"""Prompt templates and the expansion of class names into prompts (torch-free).

SED encodes every class name with the 80 "imagenet" templates, in this order: template p is input
channel p of the `conv1` cost embedding, so the order is part of the model (spec sections 4, 13).
A name containing ", " is a list of synonyms: each synonym is encoded with every template and the
embeddings are averaged per template.
"""

from __future__ import annotations

from collections.abc import Sequence

from sed_deploy.core.errors import VocabularyError

IMAGENET_TEMPLATES: tuple[str, ...] = (
    'a bad photo of a {}.',
    'a photo of many {}.',
    'a sculpture of a {}.',
    'a photo of the hard to see {}.',
    'a low resolution photo of the {}.',
    'a rendering of a {}.',
    'graffiti of a {}.',
    'a bad photo of the {}.',
    'a cropped photo of the {}.',
    'a tattoo of a {}.',
    'the embroidered {}.',
    'a photo of a hard to see {}.',
    'a bright photo of a {}.',
    'a photo of a clean {}.',
    'a photo of a dirty {}.',
    'a dark photo of the {}.',
    'a drawing of a {}.',
    'a photo of my {}.',
    'the plastic {}.',
    'a photo of the cool {}.',
    'a close-up photo of a {}.',
    'a black and white photo of the {}.',
    'a painting of the {}.',
    'a painting of a {}.',
    'a pixelated photo of the {}.',
    'a sculpture of the {}.',
    'a bright photo of the {}.',
    'a cropped photo of a {}.',
    'a plastic {}.',
    'a photo of the dirty {}.',
    'a jpeg corrupted photo of a {}.',
    'a blurry photo of the {}.',
    'a photo of the {}.',
    'a good photo of the {}.',
    'a rendering of the {}.',
    'a {} in a video game.',
    'a photo of one {}.',
    'a doodle of a {}.',
    'a close-up photo of the {}.',
    'a photo of a {}.',
    'the origami {}.',
    'the {} in a video game.',
    'a sketch of a {}.',
    'a doodle of the {}.',
    'a origami {}.',
    'a low resolution photo of a {}.',
    'the toy {}.',
    'a rendition of the {}.',
    'a photo of the clean {}.',
    'a photo of a large {}.',
    'a rendition of a {}.',
    'a photo of a nice {}.',
    'a photo of a weird {}.',
    'a blurry photo of a {}.',
    'a cartoon {}.',
    'art of a {}.',
    'a sketch of the {}.',
    'a embroidered {}.',
    'a pixelated photo of a {}.',
    'itap of the {}.',
    'a jpeg corrupted photo of the {}.',
    'a good photo of a {}.',
    'a plushie {}.',
    'a photo of the nice {}.',
    'a photo of the small {}.',
    'a photo of the weird {}.',
    'the cartoon {}.',
    'art of the {}.',
    'a drawing of the {}.',
    'a photo of the large {}.',
    'a black and white photo of a {}.',
    'the plushie {}.',
    'a dark photo of a {}.',
    'itap of a {}.',
    'graffiti of the {}.',
    'a toy {}.',
    'itap of my {}.',
    'a photo of a cool {}.',
    'a photo of a small {}.',
    'a tattoo of the {}.',
)

SYNONYM_SEPARATOR = ", "
# Limits that keep a vocabulary's cost bounded: its text embeddings are [T,80,D] float32 (4096 classes of
# SED-L: 1 GB), and a name is read by CLIP as at most 77 tokens (longer names are cut, see
# `text_encoding.context_overflows`), so 1000 characters is far more than any name can use.
MAX_CLASSES = 4096
MAX_NAME_CHARS = 1000


def synonyms(name: str) -> list[str]:
    """The synonyms of a class name: split on ", " (names are otherwise used verbatim)."""
    return name.split(SYNONYM_SEPARATOR) if SYNONYM_SEPARATOR in name else [name]


def expand_prompts(names: Sequence[str], templates: Sequence[str] = IMAGENET_TEMPLATES) -> list[str]:
    """All prompts of a vocabulary, class-major, template-major within a class.

    For a class with synonyms s_1..s_n the prompts are t_1(s_1), .., t_1(s_n), t_2(s_1), ...
    """
    return [template.format(syn) for name in names for template in templates for syn in synonyms(name)]


def check_names(names: Sequence[str]) -> list[str]:
    """Validate a vocabulary: 1 to `MAX_CLASSES` non-blank strings of at most `MAX_NAME_CHARS`. Returns a list."""
    if isinstance(names, str | bytes) or not isinstance(names, Sequence):
        raise VocabularyError(f"a vocabulary is a list of class names, got {type(names).__name__}")
    names = list(names)
    if not names:
        raise VocabularyError("the vocabulary is empty; give at least one class name")
    if len(names) > MAX_CLASSES:
        raise VocabularyError(f"the vocabulary has {len(names)} classes, more than the {MAX_CLASSES} sed-deploy "
                              "accepts (its text embeddings alone would take gigabytes); split it")
    for i, name in enumerate(names):
        if not isinstance(name, str) or not name.strip():
            shown = repr(name) if len(repr(name)) < 60 else f"a {type(name).__name__}"
            raise VocabularyError(f"class name #{i} is {shown}; every class name must be non-blank text")
        if len(name) > MAX_NAME_CHARS:
            raise VocabularyError(f"class name #{i} ({name[:30]!r}...) has {len(name)} characters, more than "
                                  f"{MAX_NAME_CHARS}; CLIP reads at most 77 tokens of a name")
    return names
