"""How many blocks the engine's next step may allocate (an upper estimate), so the hook can back
their pages in one call before scheduling instead of one call per allocation."""

from __future__ import annotations


def peek_queue(q) -> list:
    """Items waiting in a queue.Queue, without taking them."""
    if q is None:
        return []
    try:
        with q.mutex:
            return list(q.queue)
    except AttributeError:
        return []


def predict_demand(cache, processor, manager, tracker, requests_module, arriving=()) -> int:
    """Blocks the next schedule_batch may allocate. `arriving`: requests still in the input queue
    (prepare_next_batch drains it before scheduling)."""
    scheduler = processor.scheduler
    block_size = cache.block_size
    decoding = requests_module.RequestStatus.DECODING

    def need(state, tokens: int) -> int:
        occupancy = state.allocated_blocks * block_size - state.current_len()
        if occupancy < tokens or state.allocated_blocks == 0:
            blocks = (tokens - occupancy + 1) // block_size + 1
            return cache.blocks_needed(blocks, state.allocated_blocks)
        return 0

    demand = 0
    for state in list(scheduler.active_requests.values()):
        tokens = 1 if state.status == decoding else len(state.remaining_prefill_tokens)
        demand += need(state, tokens)
    if not scheduler.block_new_requests:
        budget = getattr(processor, "max_batch_tokens", cache.max_batch_tokens)
        waiting = [scheduler.waiting_requests.get(r) for r in list(scheduler.waiting_requests_order)]
        for state in waiting + list(arriving):
            if budget <= 0:
                break
            if state is None or not hasattr(state, "remaining_prefill_tokens"):
                continue
            tokens = min(len(state.remaining_prefill_tokens) or len(state.initial_tokens), budget)
            budget -= tokens
            demand += need(state, tokens)
    if tracker.prefer_cached:
        demand -= len(manager._init_block_ids)  # those get reused before new pages
    return max(0, min(demand, tracker.nfree))


__all__ = ["peek_queue", "predict_demand"]
