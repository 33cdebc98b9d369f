"""The gateway's own part of a request (erasure, correction, a recorded withdrawal or opt-out,
an export) and what the requester sees of it: the status and the signed download.
"""

from __future__ import annotations

import datetime as dt
import logging
from dataclasses import replace
from typing import Any

from gateway.core.errors import Unavailable
from gateway.rights import credentials, events, kinds
from gateway.rights.base import RightsBase
from gateway.rights.export import build_zip
from gateway.rights.ports import RequestError, fmt, parse_time
from gateway.sinks.rights import Erasure, StoredRequest

log = logging.getLogger("gateway.rights")


class Fulfilment(RightsBase):
    """The gateway's own part of a request, and the requester's view of it."""

    # -- the gateway's own part ---------------------------------------------------------

    async def _fulfil(self, request: StoredRequest) -> StoredRequest:
        """Do what the gateway itself can do for the request; retried by ``tick`` if it
        cannot yet (e.g. deletion while the subject's records are still in the outbox)."""
        if request.gateway_done_at is not None or not kinds.is_open(request.state):
            return request
        now = self.clock()
        result: dict[str, Any]
        if request.type == "deletion":
            if self.records is not None and not self.records.settled_before(
                parse_time(request.received_at)
            ):
                return request  # erase once every earlier record has reached the store
            erased: Erasure = await self._call(
                self.store.erase(request.site, request.subject_ids, request.request_id, fmt(now))
            )
            result = {
                "erased_records": erased.records,
                "erased_identity_links": erased.identity_links,
                "erased_preference_extras": erased.preference_states,
            }
        elif request.type == "correction":
            result = await self._correct(request, now)
        elif request.type in kinds.EXPORT_TYPES:
            result = {"export": "ready"}
        elif request.type in ("withdraw", "opt_out_sale") and self.records is not None:
            # A consent record on the subject's behalf: the banner, the snippet and every
            # system reading consents see it, and the history shows who asked (channel api).
            recorded = [
                await self.records.record_choice(
                    request.site, subject, request.type, request.region,
                    f"rights-{request.request_id}-{index}",
                )
                for index, subject in enumerate(request.subject_ids)
            ]  # fmt: skip
            result = {"recorded": [r for r in recorded if r]}
        else:
            # objection, restriction: the gateway holds no processing of its own to stop;
            # the event tells every downstream system, which confirm.
            result = {"announced": True}
        changes = {"gateway_done_at": fmt(now), "result": result, "updated_at": fmt(now)}
        after = replace(request, **changes)  # type: ignore[arg-type]
        parts = await self._call(self.store.systems(request.request_id))
        change = events.event(events.UPDATED, fmt(now), after, parts, change="gateway_done")
        if not await self._call(
            self.store.update(request.request_id, request.state, changes, None, [change])
        ):
            return request
        return await self._maybe_complete(after, parts)

    async def _correct(self, request: StoredRequest, now: dt.datetime) -> dict[str, Any]:
        details = request.details
        unlink = [str(h) for h in details.get("unlink_hashes", [])]
        link = [(str(t), str(h)) for t, h in details.get("link_hashes", [])]
        await self._call(
            self.store.relink(request.site, request.subject_ids, unlink, link, fmt(now))
        )
        return {"unlinked": len(unlink), "linked": len(link)}

    # -- the subject's view -------------------------------------------------------------

    async def view(self, request: StoredRequest, base_url: str) -> dict[str, Any]:
        """What the requester sees: state, dates, reason, and the download link when ready."""
        body: dict[str, Any] = {
            "request_id": request.request_id,
            "type": request.type,
            "status": request.state,
            "received_at": request.received_at,
            "due_at": request.due_at,
        }
        if request.reason:
            body["reason"] = request.reason
        if (
            request.type in kinds.EXPORT_TYPES
            and request.gateway_done_at is not None
            and request.state in (kinds.IN_PROGRESS, kinds.EXTENDED, kinds.COMPLETED)
        ):
            body["download_url"] = await self.download_url(request, base_url)
        return body

    async def download_url(self, request: StoredRequest, base_url: str) -> str:
        key = await self.key()
        # Whole hours: every view within the hour gives the same link.
        now = int(self.clock().timestamp())
        expires = (now // 3600 + 1) * 3600 + credentials.DOWNLOAD_TTL
        sig = credentials.sign_download(key, request.request_id, expires)
        return (
            f"{base_url}/v1/sites/{request.site}/rights-requests/{request.request_id}"
            f"/download?expires={expires}&signature={sig}"
        )

    async def download(
        self, site: str, request_id: str, expires: str, signature: str
    ) -> tuple[StoredRequest, bytes]:
        """The ZIP for a genuine, unexpired link (403 otherwise, the same for every cause)."""
        key = await self.key()
        now = int(self.clock().timestamp())
        if not credentials.download_ok(key, request_id, expires, signature, now):
            raise RequestError("invalid_link", "the link is invalid or expired", status_code=403)
        request: StoredRequest | None = await self._call(self.store.get(request_id))
        if (
            request is None
            or request.site != site
            or request.type not in kinds.EXPORT_TYPES
            or request.gateway_done_at is None
            or request.state == kinds.DENIED
        ):
            raise RequestError("invalid_link", "the link is invalid or expired", status_code=403)
        return request, build_zip(await self.export_data(request))

    async def export_data(self, request: StoredRequest) -> dict[str, Any]:
        if self.records is None or self.states is None:
            raise Unavailable("the gateway is starting", retry_after=1)
        subjects = []
        wanted: dict[str, set[str]] = {}
        for subject in request.subject_ids:
            history = await self._call(self.records.history(request.site, subject))
            state = await self._call(self.states.state_of(request.site, subject))
            records = history.get("history", [])
            for r in records:
                wanted.setdefault(r["banner_version"], set()).add(r["language"])
            subjects.append(
                {
                    "subject_id": subject,
                    "records": records,
                    "current": history.get("current"),
                    "preferences": state.get("preferences", {}),
                    "identities": state.get("identities", []),
                }
            )
        texts: dict[str, dict[str, Any]] = {}
        for version, languages in sorted(wanted.items()):
            stored = await self._call(self.records.banner_version(request.site, version))
            if stored is None:
                continue
            by_locale = stored.get("texts", {})
            texts[version] = {
                lang: by_locale.get(lang) or by_locale.get(lang.replace("-", "_"))
                for lang in sorted(languages)
            }
        return {
            "request": {
                "request_id": request.request_id,
                "site": request.site,
                "type": request.type,
                "received_at": request.received_at,
                "exported_at": fmt(self.clock()),
            },
            "subjects": subjects,
            "texts": texts,
        }
