"""Local tokenisation: the Rust tokenizer called directly must give the ids the Hugging
Face wrapper gives, or the wrapper is used."""

from __future__ import annotations

import pytest
from transformers import AutoTokenizer

from ttscale.engine.local_tokenizer import LocalChatTemplate

TEXTS = [
    "What is 7 + 5? Put the answer in \\boxed{}.",
    "<|im_start|>user\nCount to ten.<|im_end|>\n<|im_start|>assistant\n",  # special tokens
    "Ünïcödé, 数学, emoji 🙂, tabs\tand  double  spaces\n\n",
    "",
    "seven plus five " * 500,  # long: tokenised in a thread, through the wrapper
]


@pytest.fixture(scope="module")
def tokenizer(default_model_path):
    return AutoTokenizer.from_pretrained(default_model_path)


@pytest.mark.parametrize("text", TEXTS)
async def test_direct_encoding_gives_the_wrappers_ids(tokenizer, text):
    expected = tokenizer.encode(text, add_special_tokens=False)
    assert await LocalChatTemplate(tokenizer).tokenize(text) == expected


async def test_a_tokenizer_file_with_truncation_goes_through_the_wrapper(tokenizer):
    """The wrapper turns a file's truncation off per call; the Rust tokenizer called
    directly would cut the text at 4 tokens."""
    truncating = AutoTokenizer.from_pretrained(tokenizer.name_or_path)
    truncating.backend_tokenizer.enable_truncation(max_length=4)
    text = TEXTS[0]
    assert len(truncating.backend_tokenizer.encode(text, add_special_tokens=False).ids) == 4
    ids = await LocalChatTemplate(truncating).tokenize(text)
    assert ids == tokenizer.encode(text, add_special_tokens=False) and len(ids) > 4
