import numpy as np
import pytest

from seqapp.text import END_ID, OOV_ID, PAD_ID, START_ID, Tokenizer, pad


def test_char_round_trip_and_reserved_ids():
    tok = Tokenizer("char").fit(["hello world"])
    assert tok.vocab[:4] == ["<pad>", "<unk>", "<s>", "</s>"]
    ids = tok.encode("hello")
    assert min(ids) >= 4
    assert tok.decode(ids) == "hello"
    assert tok.encode("hi", add_start=True, add_end=True)[0] == START_ID
    assert tok.encode("hi", add_start=True, add_end=True)[-1] == END_ID


def test_most_frequent_first_and_size_limit():
    tok = Tokenizer("char").fit(["aaabbc"], max_size=6)
    assert tok.vocab[4:] == ["a", "b"]
    assert tok.encode("c") == [OOV_ID]


def test_unknown_characters_map_to_oov_and_are_reported():
    tok = Tokenizer("char").fit(["abc"])
    assert tok.encode("aéz") == [tok.index["a"], OOV_ID, OOV_ID]
    assert tok.unknown_tokens("aéz é") == ["é", "z", " "]


def test_empty_text():
    tok = Tokenizer("char").fit([""])
    assert tok.vocab_size == 4
    assert tok.encode("") == []
    assert tok.decode([]) == ""


def test_unicode_round_trip():
    text = "naïve café — 東京 🚀"
    tok = Tokenizer("char").fit([text])
    assert tok.decode(tok.encode(text)) == text


def test_word_level_detokenizes_punctuation():
    text = "Hello, world! It's a test.\nNew line"
    tok = Tokenizer("word").fit([text])
    assert "," in tok.vocab and "It's" in tok.vocab and "\n" in tok.vocab
    assert tok.decode(tok.encode(text)) == text


def test_word_level_lower_and_strip_punctuation():
    tok = Tokenizer("word", lower=True, strip_punctuation=True).fit(["Great movie!!! GREAT."])
    assert tok.vocab[4:] == ["great", "movie"]


def test_json_round_trip_keeps_vocabulary_and_options():
    tok = Tokenizer("word", lower=True).fit(["One two two"])
    again = Tokenizer.from_dict(tok.to_dict())
    assert again.vocab == tok.vocab and again.lower and again.level == "word"
    assert again.encode("TWO one") == tok.encode("two one")


def test_decode_stops_at_end_and_skips_padding():
    tok = Tokenizer("char").fit(["ab"])
    a, b = tok.index["a"], tok.index["b"]
    assert tok.decode([START_ID, a, PAD_ID, b, END_ID, a]) == "ab"


def test_streaming_pieces_match_join():
    tok = Tokenizer("word").fit(["hi , there . ok"])
    tokens = ["hi", ",", "there", ".", "ok"]
    pieces = [tok.piece(prev, t) for prev, t in zip([None] + tokens, tokens)]
    assert "".join(pieces) == tok.join(tokens) == "hi, there. ok"


def test_pad_post_and_truncate():
    out = pad([[5, 6, 7], [8]], max_len=2)
    assert out.dtype == np.int32
    assert out.tolist() == [[5, 6], [8, PAD_ID]]


def test_bad_level_rejected():
    with pytest.raises(ValueError):
        Tokenizer("byte")
