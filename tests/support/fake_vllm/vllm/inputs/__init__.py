"""vllm.inputs.TokensPrompt: a prompt given as token ids (a dict, as vLLM's TypedDict)."""


def TokensPrompt(prompt_token_ids: list[int], **extra) -> dict:  # noqa: N802 - vLLM's name
    return {"prompt_token_ids": prompt_token_ids, **extra}
