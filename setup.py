from setuptools import find_packages, setup

setup(
    name='mmjax',
    version='0.1.0',
    description='Multimodal (text, image, audio) training in JAX/Flax.',
    packages=find_packages(include=['mmjax', 'mmjax.*', 'configs']),
    # The Free Spoken Digit Dataset recordings that 'av_digits' is built
    # from, with their license (CC BY-SA 4.0) and attribution.
    package_data={'mmjax.data.builders': [
        'fsdd/*.md', 'fsdd/LICENSE', 'fsdd/metadata.py',
        'fsdd/recordings/*.wav']},
    python_requires='>=3.10',
    install_requires=[
        'absl-py>=2.1',
        'array-record>=0.5',
        'einops>=0.8',
        'flax>=0.10',
        'grain>=0.2.10',
        'importlib_resources',  # Needed by tensorflow-datasets, not declared by it.
        'jax>=0.5',
        'jiwer>=3.0',  # WER / CER.
        'matplotlib>=3.8',
        'ml-collections>=1.0',
        'numpy>=1.26',
        'optax>=0.2.4',
        'orbax-checkpoint>=0.11',
        'pillow>=10',
        'pyarrow>=14',  # Parquet embedding export.
        'sacrebleu>=2.4',  # BLEU.
        'safetensors>=0.4',  # Pretrained weights.
        'scikit-learn>=1.3',
        'scipy>=1.11',
        'sentencepiece>=0.2',
        'soundfile>=0.12',
        'tensorboardX>=2.6',
        'tensorflow-datasets>=4.9.7',
        'tokenizers>=0.15',  # WordPiece for pretrained BERT towers.
        'tqdm>=4.66',
    ],
    extras_require={'test': ['import-linter>=2.0', 'pytest>=8',
                             'pytest-xdist>=3.5']},
)
