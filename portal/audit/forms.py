"""The audit log's filters: a GET form, so a filtered log is a link one can keep or send."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

from wtforms import Form, SelectField, StringField
from wtforms.validators import Length, ValidationError
from wtforms.widgets import DateTimeLocalInput

from portal.audit.service import EventFilter
from portal.audit.targets import KINDS, history_of
from portal.forms import QuickSelect, strip
from portal.pagination import MAX_ID

TARGET = re.compile(rf"^({'|'.join(KINDS)})(?::(\d{{1,10}}))?$")
# What a person may type, and how far each reaches: a day, a minute or a second.
MOMENT_FORMATS = (("%Y-%m-%dT%H:%M:%S", timedelta(seconds=1)), ("%Y-%m-%dT%H:%M", timedelta(minutes=1)),
                  ("%Y-%m-%d", timedelta(days=1)))
SHOWN_FORMAT = "%Y-%m-%dT%H:%M"  # what `datetime-local` inputs show
EARLIEST, LATEST = datetime(1970, 1, 1, tzinfo=UTC), datetime(9000, 1, 1, tzinfo=UTC)


class MomentField(StringField):
    """A UTC date, or date and time, from a `datetime-local` input (or a typed link). `start` is the first
    moment it names and `end` the first moment after it: "to 2026-12-03" includes all of that day."""

    widget = DateTimeLocalInput()
    start: datetime | None = None
    end: datetime | None = None

    def pre_validate(self, form) -> None:
        self.start = self.end = None
        if not self.data:
            return
        for layout, reach in MOMENT_FORMATS:
            try:
                start = datetime.strptime(self.data, layout).replace(tzinfo=UTC)
            except ValueError:
                continue
            if not EARLIEST <= start < LATEST:
                raise ValidationError("Enter a date between 1970 and 8999.")
            self.start, self.end = start, start + reach
            return
        raise ValidationError("Enter a date and time like 2026-12-03T14:30 (UTC).")

    def _value(self) -> str:
        return self.start.strftime(SHOWN_FORMAT) if self.start else (self.data or "")


class EventFilterForm(Form):
    actor = StringField("Who (e-mail or label)", filters=[strip], validators=[Length(max=254)],
                        render_kw={"list": "audit-actors"})
    action = SelectField("Action", validate_choice=False, validators=[Length(max=80)], widget=QuickSelect())
    target = SelectField("About", validate_choice=False, widget=QuickSelect())
    since = MomentField("From (UTC)")
    until = MomentField("To (UTC)")

    def __init__(self, formdata, actions: list[str]):
        super().__init__(formdata)
        self.action.choices = [("", "Any action"), *((action, action) for action in actions)]
        if self.action.data and self.action.data not in actions:
            self.action.choices.append((self.action.data, self.action.data))
        self.target.choices = [("", "Anything"), *((name, f"any {kind.noun}") for name, kind in KINDS.items())]

    def validate_target(self, field) -> None:
        if field.data and self.target_kind is None:
            raise ValidationError("Choose what the events are about from the list.")

    def validate_until(self, field) -> None:
        if field.start and self.since.start and field.end <= self.since.start:
            raise ValidationError("Enter a moment after From.")

    @property
    def target_kind(self) -> tuple[str, int | None] | None:
        """("router", 5) for `router:5`, ("router", None) for `router`; None for anything (or nonsense)."""
        match = TARGET.match(self.target.data or "")
        if match is None or (match[2] and int(match[2]) > MAX_ID):
            return None
        return match[1], int(match[2]) if match[2] else None

    def event_filter(self, tenant_id: int) -> EventFilter:
        """The filter the valid form describes."""
        kind = self.target_kind
        target_type = KINDS[kind[0]].table if kind and kind[1] is None else None
        targets = history_of(kind[0], kind[1], tenant_id) if kind and kind[1] is not None else ()
        return EventFilter(actor=self.actor.data or None, action=self.action.data or None, target_type=target_type,
                           targets=targets, since=self.since.start, until=self.until.end)

    def query_args(self) -> dict[str, str]:
        """The filters as given, for links that keep them (the pager, the export)."""
        return {field.name: field.data for field in self if field.data}
