"""`Event`: a pydantic model bound to one Avro schema, checked when the class is created."""

from __future__ import annotations

import inspect
import sys
import typing
from pathlib import Path
from typing import ClassVar, Unpack

from pydantic import BaseModel, ConfigDict

from kit.binding import EncodeCheck, check_model, encode_check
from kit.schema import Schema, SchemaRepository, repository_for

__all__ = ["Event"]


class Event(BaseModel):
    """Base class of typed events.

    Bind a subclass to a schema by its full name::

        class Released(Event, schema="inventory.Released"):
            order_id: str
            released: bool

    The schema is looked up in `repository` if given (a SchemaRepository or a folder),
    else in KIT_SCHEMAS_DIR, else in the nearest `schemas/` folder above the module that
    defines the class. A model that disagrees with its schema raises SchemaError at once.
    A subclass without `schema=` is abstract (a nested record type or a common base).
    """

    model_config = ConfigDict(extra="forbid")

    __kit_schema__: ClassVar[Schema | None] = None
    __kit_header__: ClassVar[bytes] = b""
    __kit_repository__: ClassVar[SchemaRepository | None] = None
    __kit_pending__: ClassVar[tuple[str | None, SchemaRepository | Path | str | None]] = (
        None,
        None,
    )
    __kit_flat__: ClassVar[bool] = False
    """True when the field values can be encoded as they are (no nested models, no aliases)."""
    __kit_check__: ClassVar[EncodeCheck | None] = None
    """What the codec checks before encoding (int ranges, naive datetimes): kit.binding."""

    def __init_subclass__(
        cls,
        schema: str | None = None,
        repository: SchemaRepository | Path | str | None = None,
        **kwargs: Unpack[ConfigDict],
    ) -> None:
        super().__init_subclass__(**kwargs)
        cls.__kit_pending__ = (schema, repository)

    @classmethod
    def __pydantic_init_subclass__(cls, **kwargs: object) -> None:
        super().__pydantic_init_subclass__(**kwargs)
        name, repository = cls.__dict__.get("__kit_pending__", (None, None))
        if name is None:
            cls.__kit_schema__ = None
            return
        repo = _repository_for(cls, repository)
        bound = repo.get(name)
        check_model(cls, bound)
        cls.__kit_schema__ = bound
        cls.__kit_repository__ = repo
        cls.__kit_flat__ = _is_flat(cls)
        cls.__kit_check__ = encode_check(bound)
        cls.__kit_header__ = b"\xc3\x01" + bound.fingerprint

    @classmethod
    def kit_schema(cls) -> Schema:
        """The schema this event class is bound to."""
        if cls.__kit_schema__ is None:
            raise TypeError(f"{cls.__qualname__} is not bound to a schema (use schema=...)")
        return cls.__kit_schema__


def _repository_for(
    cls: type, repository: SchemaRepository | Path | str | None
) -> SchemaRepository:
    """The repository a class binds to: the one given, else `repository_for` its module."""
    if isinstance(repository, SchemaRepository):
        return repository
    if repository is not None:
        return repository_for(schemas_dir=repository)
    return repository_for(_source_of(cls))


def _source_of(cls: type) -> str | None:
    """The file of the module that defines `cls` (None for one without a source file)."""
    module = sys.modules.get(cls.__module__)
    if module is None:
        return None
    try:
        return inspect.getsourcefile(module)
    except TypeError:
        return None


def _is_flat(cls: type[BaseModel]) -> bool:
    """Whether instances' __dict__ is already the Avro record (saves a model_dump per encode)."""

    def plain(annotation: object) -> bool:
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            return False
        return all(plain(arg) for arg in typing.get_args(annotation))

    return all(
        (info.alias is None or info.alias == name) and plain(info.annotation)
        for name, info in cls.model_fields.items()
    )
