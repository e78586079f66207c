"""``GET/PUT /policies``: session limits and culling exemptions (reads: reader; writes: admin, audit-logged)."""

from __future__ import annotations

from fastapi import APIRouter, Request

from session_monitor.protocol import Policies, PoliciesOut, ProcessCount
from session_monitor.server.deps import AdminDep, ViewerDep, as_actor
from session_monitor.server.errors import READ, WRITE_CLIENT
from session_monitor.server.policies import PolicyCache
from session_monitor.server.routes._common import JSONBytes

router = APIRouter(tags=["policies"])


def _cache(request: Request) -> PolicyCache:
    cache: PolicyCache = request.app.state.policy_cache
    return cache


async def _answer(cache: PolicyCache) -> JSONBytes:
    snap = await cache.snapshot(fresh=True)
    stored = snap.stored
    return JSONBytes(
        PoliciesOut(
            policies=stored.policies,
            updated_at=stored.updated_at,
            updated_by=stored.updated_by,
            counts=snap.counts(),
            processes=[ProcessCount.model_validate(p) for p in snap.groups.processes],
        ).model_dump(mode="json")
    )


@router.get("/policies", response_model=PoliciesOut, summary="Session limits and exemptions", responses=READ)
async def get_policies(request: Request, _: ViewerDep) -> JSONBytes:
    """The policies in force, who set them and when, and the live sessions counted against each limit."""
    return await _answer(_cache(request))


@router.put(
    "/policies", response_model=PoliciesOut, summary="Set session limits and exemptions", responses=WRITE_CLIENT
)
async def put_policies(body: Policies, request: Request, principal: AdminDep) -> JSONBytes:
    """Replace the policies (the whole document). Recorded in the audit log with the previous ones.

    Agents get them in their next sync answer (within one sync interval); sessions already open are not
    ended by a lower limit, new ones are refused until the count is under it.
    """
    cache = _cache(request)
    await cache.store.put(body, as_actor(principal))
    cache.invalidate()
    return await _answer(cache)
