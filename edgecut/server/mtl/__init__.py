"""Multi-task models: the contract, reference models, data (synthetic scenes, folders), metrics, training."""
