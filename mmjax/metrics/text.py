"""Corpus-level text metrics on the host: BLEU-4, CIDEr-D, WER, CER, accuracy.

Inputs are plain Python: a sentence is a string (split on whitespace into
words) or a sequence of token ids (e.g. decoded ids up to EOS, with EOS and
padding removed by the caller). Every function takes one hypothesis per
example and, where a task has several references per example (captions),
a list of references per example.

BLEU is sacrebleu's and WER / CER are jiwer's; CIDEr-D is computed here (see
`cider_d` for why).
"""
import collections
import math
from typing import Dict, List, Sequence, Tuple, Union

import jiwer
import sacrebleu

Sentence = Union[str, Sequence[int]]
Words = Tuple

CIDER_SIGMA = 6.0
# CER compares strings as written: jiwer's default also strips them.
_CHARACTERS = jiwer.Compose([jiwer.ReduceToListOfListOfChars()])


def _words(sentence: Sentence) -> Words:
  return tuple(sentence.split() if isinstance(sentence, str) else sentence)


def _text(sentence: Sentence) -> str:
  """A sentence as the whitespace-separated words the libraries read (a
  token id becomes the word of its digits)."""
  return ' '.join(map(str, _words(sentence)))


def _ngrams(words: Words, max_n: int) -> collections.Counter:
  """Counts of the 1- to max_n-grams of `words`."""
  return collections.Counter(words[i:i + n] for n in range(1, max_n + 1)
                             for i in range(len(words) - n + 1))


def corpus_bleu(hypotheses: Sequence[Sentence],
                references: Sequence[Sequence[Sentence]]) -> float:
  """Corpus BLEU-4 (Papineni et al., 2002) in [0, 1], without smoothing:
  sacrebleu's, on the words as given (`tokenize='none'`).

  Args:
    hypotheses: one sentence per example.
    references: per example, a list of one or more reference sentences.
  """
  if len(hypotheses) != len(references):
    raise ValueError(f'{len(hypotheses)} hypotheses but {len(references)} '
                     'reference lists.')
  if not hypotheses:
    return 0.0
  # sacrebleu reads reference streams (the i-th reference of every example);
  # None fills the streams of examples with fewer references.
  streams = [[_text(refs[i]) if i < len(refs) else None for refs in references]
             for i in range(max(map(len, references)))]
  return sacrebleu.corpus_bleu(
      [_text(h) for h in hypotheses], streams, tokenize='none',
      smooth_method='none').score / 100


def cider_d(hypotheses: Sequence[Sentence],
            references: Sequence[Sequence[Sentence]], max_n: int = 4,
            sigma: float = CIDER_SIGMA) -> float:
  """Corpus CIDEr-D (Vedantam et al., 2015), as in the coco-caption code.

  Document frequencies count, for every n-gram, the examples whose
  references contain it, over the whole list given (the eval split). Each
  sentence becomes per-n tf-idf vectors (counts times log(examples /
  max(1, df))); an example scores the mean over its references and over
  n = 1..max_n of the cosine similarity with the hypothesis' counts clipped
  to the reference's, times a Gaussian penalty exp(-(length difference)^2 /
  (2 sigma^2)), times 10. Returns the mean over examples.

  Our own code, because no maintained library fits: the reference
  implementation (pycocoevalcap, whose CiderD scorer this follows) was last
  released in 2020 and ships Java tools (PTB tokenizer, METEOR, SPICE) that
  mmjax does not need.
  """
  if len(hypotheses) != len(references):
    raise ValueError(f'{len(hypotheses)} hypotheses but {len(references)} '
                     'reference lists.')
  if not references or not all(references):
    raise ValueError('CIDEr-D needs at least one example and one reference '
                     'per example.')
  refs = [[_words(r) for r in example] for example in references]
  ref_counts = [[_ngrams(r, max_n) for r in example] for example in refs]
  document_frequency = collections.Counter()
  for example in ref_counts:
    document_frequency.update(set().union(*example))
  log_examples = math.log(float(len(references)))

  def vectors(counts: collections.Counter) -> Tuple[List[Dict], List[float]]:
    vec = [{} for _ in range(max_n)]
    for ngram, count in counts.items():
      vec[len(ngram) - 1][ngram] = count * (
          log_examples - math.log(max(1.0, document_frequency[ngram])))
    norms = [math.sqrt(sum(v * v for v in vn.values())) for vn in vec]
    return vec, norms

  scores = []
  for hypothesis, example_refs, example_counts in zip(hypotheses, refs,
                                                      ref_counts):
    words = _words(hypothesis)
    hyp_vec, hyp_norm = vectors(_ngrams(words, max_n))
    total = 0.0
    for ref, counts in zip(example_refs, example_counts):
      ref_vec, ref_norm = vectors(counts)
      penalty = math.exp(-(len(words) - len(ref)) ** 2 / (2 * sigma ** 2))
      for n in range(max_n):
        if hyp_norm[n] and ref_norm[n]:
          dot = sum(min(value, ref_vec[n].get(ngram, 0.0)) *
                    ref_vec[n].get(ngram, 0.0)
                    for ngram, value in hyp_vec[n].items())
          total += penalty * dot / (hyp_norm[n] * ref_norm[n])
    scores.append(10.0 * total / (max_n * len(example_refs)))
  return sum(scores) / len(scores)


def wer(hypotheses: Sequence[Sentence], references: Sequence[Sentence]
        ) -> float:
  """Word error rate: word edits summed over the corpus / reference words
  (jiwer's)."""
  if len(hypotheses) != len(references):
    raise ValueError(f'{len(hypotheses)} hypotheses but {len(references)} '
                     'references.')
  if not any(_words(r) for r in references):  # jiwer divides by 0 words.
    return float(sum(len(_words(h)) for h in hypotheses))
  return jiwer.wer([_text(r) for r in references],
                   [_text(h) for h in hypotheses])


def cer(hypotheses: Sequence[Sentence], references: Sequence[Sentence]
        ) -> float:
  """Character (or, for id sequences, token) error rate over the corpus:
  edits / reference length (jiwer's). Strings are compared as written,
  spaces included."""
  if references and not isinstance(references[0], str):
    return wer(hypotheses, references)  # An id is a token.
  if len(hypotheses) != len(references):
    raise ValueError(f'{len(hypotheses)} hypotheses but {len(references)} '
                     'references.')
  if not any(references):  # jiwer divides by 0 characters.
    return float(sum(map(len, hypotheses)))
  return jiwer.cer(list(references), list(hypotheses),
                   reference_transform=_CHARACTERS,
                   hypothesis_transform=_CHARACTERS)


def _normalize(answer: Sentence) -> Words:
  return _words(answer.lower() if isinstance(answer, str) else answer)


def exact_match(predictions: Sequence[Sentence],
                references: Sequence[Union[Sentence, Sequence[Sentence]]]
                ) -> float:
  """Fraction of predictions equal to their reference, or to any of a list
  of accepted answers. Strings compare lowercased with whitespace
  collapsed; id sequences compare exactly."""
  hits = 0
  for prediction, accepted in zip(predictions, references, strict=True):
    if isinstance(accepted, str) or (
        accepted and not isinstance(accepted[0], (str, list, tuple))):
      accepted = [accepted]  # One answer (a string or one id sequence).
    hits += _normalize(prediction) in {_normalize(a) for a in accepted}
  return hits / max(len(predictions), 1)
