"""Search methods compared with AXN, behind one protocol (:class:`~axn_fast.methods.baselines.SearchMethod`):
retrieve-and-rerank, ANNCUR/ADACUR, TOUR, lexical first stages (TF-IDF, BM25) and exact search."""
