"""The paper's items: which commands and runs make each table and figure, and their toy-scale smoke versions."""
