"""The names users pick from (no heavy imports: the CLI's parser reads them)."""

ALGORITHMS = ("nsga2", "rnsga2", "agemoea", "nsga3", "unsga3", "random")
TACTICS = ("full", "predictor", "concurrent", "warm_start", "popdb", "coarse_to_fine")
