"""Frozen text encoder: shapes, masks, determinism, caching, other local encoders, bad paths."""

import shutil

import pytest
import torch

from sned.text import TextEncoder, default_model_path

CAPTIONS = ["a red circle moving left slowly", "a blue square", "",
            "a green triangle moving down quickly and a cyan circle moving up slowly"]


@pytest.fixture(scope="module")
def enc():
    return TextEncoder(max_length=16)


def count_forwards(enc):
    counter = {"calls": 0, "batch": []}

    def hook(module, args, kwargs, output):
        counter["calls"] += 1
        counter["batch"].append(kwargs["input_ids"].shape[0])

    handle = enc.model.register_forward_hook(hook, with_kwargs=True)
    return counter, handle


def test_shapes_dtype_and_frozen(enc):
    emb, mask = enc.encode(CAPTIONS)
    assert enc.dim == 384
    assert emb.dtype == torch.float32 and mask.dtype == torch.bool
    assert emb.shape[:2] == mask.shape and emb.shape[0] == 4 and emb.shape[2] == 384
    assert mask.shape[1] == 16                     # the long caption is truncated to max_length
    assert not enc.model.training
    assert all(not p.requires_grad for p in enc.model.parameters())
    assert not emb.requires_grad
    # padded positions are zero
    assert float(emb[~mask].abs().max()) == 0.0
    assert (emb[mask].abs().sum(-1) > 0).all()


def test_mask_matches_tokenizer_and_values_match_model(enc):
    enc.clear_cache()
    emb, mask = enc.encode(CAPTIONS)
    tok = enc.tokenizer(CAPTIONS, padding="longest", truncation=True, max_length=16,
                        return_tensors="pt")
    assert torch.equal(mask, tok["attention_mask"].bool())
    with torch.no_grad():
        ref = enc.model(**tok).last_hidden_state
    assert torch.allclose(emb[mask], ref[mask], atol=1e-5)


def test_empty_caption_has_only_special_tokens(enc):
    emb, mask = enc.encode([""])
    assert mask.tolist() == [[True, True]]          # [CLS] [SEP]
    assert emb.shape == (1, 2, 384) and torch.isfinite(emb).all()
    single, _ = enc.encode("")                     # a bare string is a batch of one
    assert torch.equal(single, emb)


@pytest.fixture
def uncached(enc):
    enc.clear_cache()
    enc.cache_size = 0
    yield enc
    enc.cache_size = 4096


@pytest.fixture
def tiny_cache(enc):
    enc.clear_cache()
    enc.cache_size = 2
    yield enc
    enc.cache_size = 4096
    enc.clear_cache()


def test_deterministic_and_caption_dependent(uncached):
    a = uncached
    e1, m1 = a.encode(CAPTIONS[:2])
    e2, m2 = a.encode(CAPTIONS[:2])
    assert torch.equal(m1, m2) and torch.allclose(e1, e2, atol=1e-6)
    red, _ = a.encode(["a red circle moving left"])
    blue, _ = a.encode(["a blue circle moving left"])
    assert red.shape == blue.shape and not torch.allclose(red, blue, atol=1e-3)
    # batch composition (padding) does not change a caption's embedding, bitwise (exact resume
    # of training depends on it: the cache is empty after a restart)
    alone, m = a.encode([CAPTIONS[1]])
    assert torch.equal(alone[0][m[0]], e1[1][m1[1]])
    batch, bmask = a.encode(CAPTIONS)
    for i, c in enumerate(CAPTIONS):
        one, m = a.encode([c])
        assert torch.equal(one[0][m[0]], batch[i][bmask[i]]), c


def test_cache_hits_skip_the_model_and_return_identical_values(enc):
    enc.clear_cache()
    counter, handle = count_forwards(enc)
    try:
        first, fmask = enc.encode(["x one", "x two", "x one"])
        # duplicates are encoded once; captions of one token length share one forward
        assert counter == {"calls": 1, "batch": [2]}
        again, amask = enc.encode(["x two", "x one"])
        assert counter["calls"] == 1                   # all cached: no forward
        assert torch.equal(again[0][amask[0]], first[1][fmask[1]])
        assert torch.equal(again[1][amask[1]], first[0][fmask[0]])
        enc.encode(["x three", "x one"])
        assert counter["calls"] == 2 and counter["batch"][-1] == 1   # only the new caption
    finally:
        handle.remove()


def test_batches_are_one_forward_per_token_length_and_equal_captions_alone(enc):
    """Uncached captions run in one unpadded forward per token length; each embedding equals
    the caption encoded alone (to float32 rounding: a batched matmul may block differently from
    a single row's: ~2e-6 seen with transformers 5, where it had been bitwise), and precompute
    gives the same values."""
    caps = ["a red circle moving left slowly", "a blue square moving up quickly",
            "a green triangle", "a cyan circle"]
    lengths = {len(enc.tokenize([c])["input_ids"][0]) for c in caps}
    enc.clear_cache()
    counter, handle = count_forwards(enc)
    try:
        emb, mask = enc.encode(caps)
        assert counter["calls"] == len(lengths) < len(caps)
        for i, c in enumerate(caps):
            enc.clear_cache()
            one, m = enc.encode([c])
            torch.testing.assert_close(one[0][m[0]], emb[i][mask[i]], rtol=0, atol=2e-5,
                                       msg=c)
        enc.clear_cache()
        calls = counter["calls"]
        assert enc.precompute(caps + caps[:1]) == len(caps)
        assert counter["calls"] - calls == len(lengths)
        again, amask = enc.encode(caps)
        assert counter["calls"] - calls == len(lengths)  # all cached
        assert torch.equal(again, emb) and torch.equal(amask, mask)
        assert enc.precompute(caps) == 0
    finally:
        handle.remove()
    with pytest.raises(ValueError, match="do not fit the cache"):
        TextEncoder.precompute(enc, [f"caption {i}" for i in range(enc.cache_size + 1)])


def test_cache_is_lru_bounded(tiny_cache):
    small = tiny_cache
    counter, handle = count_forwards(small)
    small.encode(["a"])
    small.encode(["b"])
    small.encode(["a"])              # refresh "a": "b" is now least recently used
    small.encode(["c"])              # evicts "b"
    assert counter["calls"] == 3
    small.encode(["a", "c"])
    assert counter["calls"] == 3
    small.encode(["b"])
    assert counter["calls"] == 4
    handle.remove()
    assert len(small._cache) == 2


def test_other_local_encoder_t5(tmp_path, enc):
    from transformers import T5Config, T5ForConditionalGeneration

    torch.manual_seed(0)
    cfg = T5Config(vocab_size=enc.tokenizer.vocab_size, d_model=16, d_kv=8, d_ff=32,
                   num_layers=1, num_decoder_layers=1, num_heads=2, decoder_start_token_id=0)
    T5ForConditionalGeneration(cfg).save_pretrained(tmp_path)
    for name in ("tokenizer.json", "tokenizer_config.json", "vocab.txt",
                 "special_tokens_map.json"):
        shutil.copy(default_model_path() / name, tmp_path / name)
    t5 = TextEncoder(tmp_path, max_length=8)
    assert type(t5.model).__name__ == "T5EncoderModel"   # the encoder part only
    assert t5.dim == 16
    emb, mask = t5.encode(["a red circle", ""])
    assert emb.shape == (2, mask.shape[1], 16) and mask.sum(1).tolist() == [5, 2]


def test_bad_paths(tmp_path):
    with pytest.raises(FileNotFoundError, match="no_such_model"):
        TextEncoder(tmp_path / "no_such_model")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="not a Hugging Face model folder"):
        TextEncoder(tmp_path / "empty")
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "config.json").write_text("{not json")
    with pytest.raises(ValueError, match="broken"):
        TextEncoder(broken)
