"""Tests of the text metrics on hand-computed cases and against sacrebleu."""
import math

import pytest
import sacrebleu

from mmjax.metrics import text

HYPOTHESES = ['the cat sat on the mat', 'a dog runs in the park today',
              'there is a red car', 'birds fly over the blue sea']
REFERENCES = [['the cat is sitting on the mat', 'a cat sat on the mat'],
              ['a dog is running in the park', 'the dog runs in a park'],
              ['a red car is parked there', 'there is a red car here'],
              ['birds are flying over the sea', 'some birds fly above the sea']]


def test_bleu_matches_sacrebleu():
  ours = text.corpus_bleu(HYPOTHESES, REFERENCES)
  streams = [list(refs) for refs in zip(*REFERENCES)]
  theirs = sacrebleu.corpus_bleu(HYPOTHESES, streams, tokenize='none',
                                 smooth_method='none').score / 100
  assert 0.2 < ours < 0.9  # Neither degenerate case.
  assert ours == pytest.approx(theirs, abs=1e-9)


def test_bleu_brevity_penalty_matches_sacrebleu():
  # Hypotheses shorter than their closest references.
  hypotheses = [h.rsplit(' ', 1)[0] for h in HYPOTHESES]
  streams = [list(refs) for refs in zip(*REFERENCES)]
  theirs = sacrebleu.corpus_bleu(hypotheses, streams, tokenize='none',
                                 smooth_method='none').score / 100
  assert sacrebleu.corpus_bleu(hypotheses, streams, tokenize='none').bp < 1
  assert text.corpus_bleu(hypotheses, REFERENCES) == pytest.approx(theirs)


def test_bleu_hand_cases_and_token_ids():
  assert text.corpus_bleu(['a b c d e'], [['a b c d e']]) == pytest.approx(
      1.0)
  # No matching 4-gram anywhere in the corpus: 0 without smoothing.
  assert text.corpus_bleu(['a b c d e'], [['a b c x d e']]) == 0.0
  # 'a b c d e f' vs 'a b c d e g': precisions 5/6, 4/5, 3/4, 2/3, no
  # brevity penalty.
  expected = (5 / 6 * 4 / 5 * 3 / 4 * 2 / 3) ** 0.25
  assert text.corpus_bleu(['a b c d e f'], [['a b c d e g']]) == (
      pytest.approx(expected))
  # Token ids give the same value as the words they stand for.
  assert text.corpus_bleu([[1, 2, 3, 4, 5, 6]], [[[1, 2, 3, 4, 5, 7]]]) == (
      pytest.approx(expected))


def test_cider_d_hand_cases():
  refs = [['a b'], ['c d']]
  # Two examples, so every reference n-gram has idf log(2 / 1). Example 1:
  # unigrams and bigram identical (cosine 1 each), no 3- or 4-grams: 10 *
  # (1 + 1) / 4 = 5. Example 2: 'c x' shares 'c' with 'c d': unigram cosine
  # 1/2, bigram 0: 10 * 0.5 / 4 = 1.25.
  assert text.cider_d(['a b', 'c x'], refs) == pytest.approx((5 + 1.25) / 2)
  # 'a b c' against 'a b': unigram cosine 2 / sqrt(3 * 2), bigram 1 /
  # sqrt(2), one word longer: Gaussian penalty exp(-1 / 72).
  expected = 10 * math.exp(-1 / 72) * (2 / math.sqrt(6) + 1 / math.sqrt(2)) / 4
  assert text.cider_d(['a b c', 'c d'], refs) == pytest.approx(
      (expected + 5) / 2)
  # Clipping (the 'D'): repeating a matched word does not raise the score.
  assert text.cider_d(['a a b', 'c d'], refs) < text.cider_d(['a b', 'c d'],
                                                             refs)


def test_cider_d_document_frequency_spans_the_split():
  # 'a' is in every example's references: idf log(3 / 3) = 0, so matching
  # it is worth nothing; 'b' (in one example) is worth log 3.
  refs = [['a b'], ['a c'], ['a d']]
  assert text.cider_d(['a', 'a c', 'a d'], refs) == pytest.approx(
      (0 + 5 + 5) / 3)


def test_wer_and_cer():
  # 1 insertion over 3 words + 1 substitution over 3 words, corpus-level.
  assert text.wer(['the cat sat down', 'a dog ran'],
                  ['the cat sat', 'a cat ran']) == pytest.approx(2 / 6)
  # 'kitten' -> 'sitting' is the textbook 3 edits over 7 characters.
  assert text.cer(['kitten'], ['sitting']) == pytest.approx(3 / 7)
  assert text.cer(['ab c'], ['abc']) == pytest.approx(1 / 3)  # The space.
  assert text.wer([[5, 6]], [[5, 7, 8]]) == pytest.approx(2 / 3)
  # No reference words at all: every hypothesis word is an error.
  assert text.wer(['a b', ''], ['', '']) == 2.0


def test_exact_match():
  predictions = ['Yes', 'two  cats', 'red', [4, 5]]
  references = ['yes', ['2', 'Two cats'], ['blue', 'green'], [4, 5]]
  assert text.exact_match(predictions, references) == pytest.approx(3 / 4)
  assert text.exact_match([[4, 5]], [[[4], [4, 5, 6]]]) == 0.0
