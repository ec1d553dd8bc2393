"""Datasets: WordNet 3.0 nouns as a word-sense linking task, and the shipped subset.

``wordnet()`` parses Debian's ``wordnet-base`` files; ``load_wordnet_subset()``
loads the small prebuilt subset shipped with the package (with its exact CE
score matrix), which needs neither the apt package nor torch.
"""
from axn_fast.datasets.subset import WordNetSubset, load_wordnet_subset, save_subset
from axn_fast.datasets.wordnet import Synset, WordNetTask, parse_data_line, read_synsets, wordnet

__all__ = ["WordNetSubset", "WordNetTask", "Synset", "load_wordnet_subset", "save_subset",
           "wordnet", "read_synsets", "parse_data_line"]
