"""Names the transformers adapter uses everywhere (no imports: every module of the package may use it)."""

MODULE = "transformers.generation.continuous_batching"
ENGINE = "transformers-cb"
CACHE_MODULE = f"{MODULE}.cache"
MANAGER_MODULE = f"{MODULE}.cache_manager"
API_MODULE = f"{MODULE}.continuous_api"
REQUESTS_MODULE = f"{MODULE}.requests"
