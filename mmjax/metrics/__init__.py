"""Host-side evaluation metrics."""
from mmjax.metrics.fid import feature_distance
from mmjax.metrics.fid import frechet_distance
from mmjax.metrics.fid import gaussian_stats
from mmjax.metrics.ranking import r_precision
from mmjax.metrics.text import cer
from mmjax.metrics.text import cider_d
from mmjax.metrics.text import corpus_bleu
from mmjax.metrics.text import exact_match
from mmjax.metrics.text import wer
