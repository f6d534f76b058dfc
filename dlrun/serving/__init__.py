"""Served models that are more than one torch program: the text model, which tokenizes raw strings.

MLflow loads them through dlrun's own installed modules (`loader_module`), from folders that hold
data only (a torch.export program, JSON), so loading one runs no code from its folder.
"""
