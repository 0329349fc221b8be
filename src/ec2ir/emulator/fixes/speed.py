"""Shortcuts through moto's per-request overhead: the same answers, found without redoing work.

Unlike the fidelity fixes these change no answer, so they have no row in the README's table (AWS
has nothing to compare them with). They are applied with the fidelity fixes, and measured: on
moto 5.2.5, about a third of the CPU of one simple call through the in-process emulator went to
the first two lookups below, repeated on every request for answers that never change while the
process runs; a quarter of the tests' CPU went to the response serialiser, which the next two
shorten (tests/integration/test_emulator_state.py compares their bodies with moto's, byte for byte);
and a tenth to private keys for KMS keys that nothing signed with, which the last makes on first use.
"""

from __future__ import annotations

import functools
import threading
from typing import Any

from ec2ir.emulator.fixes.fix import Fix, Patch


def _moto_modules_once() -> tuple[Patch, ...]:
    import moto.backends

    listed = tuple(moto.backends.list_of_moto_modules())

    def list_of_moto_modules() -> tuple[str, ...]:
        return listed

    return (Patch(moto.backends, "list_of_moto_modules", list_of_moto_modules),)


MOTO_MODULES_ONCE = Fix(
    name="moto-modules-once",
    moto="lists its own package directory (a stat for each of 150 entries) to route every request",
    aws="(no difference: the listing is read once, since installed packages do not change)",
    why="The server's host routing asks whether the host names one of moto's service packages, "
    "and moto answers by listing its package directory again for each request.",
    build=_moto_modules_once,
)


def _method_names_once() -> tuple[Patch, ...]:
    import moto.core.responses

    responses: Any = moto.core.responses  # moto imports the function there without re-exporting it
    original = responses.method_names_from_class

    @functools.cache
    def names_of(response_class: type) -> frozenset[str]:
        return frozenset(original(response_class))

    def method_names_from_class(response_class: Any) -> frozenset[str]:
        # moto only asks whether an action is among them; classes are not changed while serving
        return names_of(response_class)

    return (Patch(responses, "method_names_from_class", method_names_from_class),)


METHOD_NAMES_ONCE = Fix(
    name="method-names-once",
    moto="inspects the whole response class (inspect.getmembers) on every request to find its action",
    aws="(no difference: each class's methods are listed once)",
    why="moto's dispatch checks that the requested action is a method of the response class, by "
    "listing every member of that class anew for each request.",
    build=_method_names_once,
)


# --- The response serialiser: which attribute holds a model member, worked out once -------------

_NO_PARENT = object()  # the shape carries no ``parent`` (moto sets one only on structure members)
# A cache entry meaning moto's own path, always (an alias provider we do not know); by identity.
_UNCACHEABLE: tuple[str, ...] = ("(moto's own path)",)
_MOST_KEPT = 50_000  # model members are finite; a bound all the same, in case of a surprise


def _parent_facts(shape: Any, key: str, shape_class: Any) -> tuple[Any, ...] | None:
    """What ShapePrefixAlias and ShapeNameAlias read of the shape's parent, read as they read it;
    ``None`` where they would raise (moto's own path then raises as moto does)."""
    parent: Any = getattr(shape, "parent", _NO_PARENT)  # hasattr's answer: AttributeError means none
    if parent is _NO_PARENT:
        return ()
    if not isinstance(parent, shape_class):  # ShapePrefixAlias asserts it is one
        return None
    try:
        members = parent.members
    except AttributeError:  # ShapeNameAlias catches it; ShapePrefixAlias only reads structures'
        members = None
    type_name, name = parent.type_name, parent.name
    if type_name == "structure" and members is None:
        return None
    prefixed = type_name == "structure" and key.lower().startswith(name.lower())
    return (
        type_name,
        name,
        members is not None and shape.name in members,  # ShapeNameAlias: a sibling's name
        prefixed and key[len(name) :] in members,  # ShapePrefixAlias: a sibling's key
    )


def _alias_facts(picker: Any, context: Any, shape_class: Any) -> tuple[Any, ...] | None:
    """Everything moto's six alias providers read, as a key; ``None`` for moto's own path."""
    obj, shape, key = context.obj, context.shape, context.key
    if type(key) is not str or shape is None or hasattr(obj, "Meta"):  # ExplicitAlias reads Meta
        return None
    parent = _parent_facts(shape, key, shape_class)
    if parent is None:
        return None
    return (
        type(picker),
        tuple(picker.alias_providers),
        obj.__class__.__name__,  # ClassPrefixAlias
        key,
        shape.name,
        shape.type_name,
        shape.serialization.get("name"),  # ModelAlias
        parent,
    )


class _AliasKeys:
    """The keys moto's default pickers try for a member, worked out once for each set of facts
    its alias providers read (``_alias_facts``)."""

    def __init__(self, serialize: Any) -> None:
        self.serialize = serialize
        self.pickers = (serialize.AttributePicker, serialize.XFormedAttributePicker)
        self.providers_read = frozenset(
            (
                serialize.ExplicitAlias,
                serialize.NoAlias,
                serialize.ModelAlias,
                serialize.ShapePrefixAlias,
                serialize.ClassPrefixAlias,
                serialize.ShapeNameAlias,
            )
        )
        self.keys_of: dict[tuple[Any, ...], tuple[str, ...]] = {}

    def __call__(self, picker: Any, context: Any) -> tuple[str, ...]:
        """The keys moto tries, in its order; ``_UNCACHEABLE`` for moto's own path."""
        if type(picker) not in self.pickers:  # a subclass may read anything
            return _UNCACHEABLE
        try:
            facts = _alias_facts(picker, context, self.serialize.Shape)
        except Exception:  # something odd: moto's own path meets it as moto meets it
            return _UNCACHEABLE
        if facts is None:
            return _UNCACHEABLE
        keys = self.keys_of.get(facts)
        if keys is None:
            try:
                known = self.providers_read.issuperset(picker.alias_providers)
                keys = tuple(picker.get_possible_keys(context)) if known else _UNCACHEABLE
            except Exception:  # moto tries keys lazily: a later provider's error may never come
                return _UNCACHEABLE
            if len(self.keys_of) >= _MOST_KEPT:
                self.keys_of.clear()
            self.keys_of[facts] = keys
        return keys


def _serializer_keys_once() -> tuple[Patch, ...]:
    import moto.core.serialize

    serialize: Any = moto.core.serialize  # get_value and MISSING are moto's, not re-exported
    original_call = serialize.AttributePicker.__call__
    keys_once = _AliasKeys(serialize)

    def pick(picker: Any, context: Any) -> Any:
        keys = keys_once(picker, context)
        if keys is _UNCACHEABLE:
            return original_call(picker, context)
        # From here on, moto's own AttributePicker.__call__, with the keys it would have tried.
        obj = context.obj
        for possible_key in keys:
            value = serialize.get_value(obj, possible_key, serialize.MISSING)
            if value is not serialize.MISSING:
                break
        else:
            value = None
        key_path = f"{context.key_path}.{context.key}"
        for transform_path, transform in picker.response_transformers.items():
            if key_path.endswith(transform_path):
                value = transform(value)
                break
        return value

    return (Patch(serialize.AttributePicker, "__call__", pick),)


SERIALIZER_KEYS_ONCE = Fix(
    name="serializer-keys-once",
    moto="builds six alias-provider objects for each member of each value it serialises, to find "
    "which attribute holds it",
    aws="(no difference: the attributes tried are worked out once for each kind of member)",
    why="The keys moto tries depend only on the member, its shape and parent, and the class of the "
    "value, yet are worked out anew for every value: a quarter of the tests' CPU went there.",
    build=_serializer_keys_once,
)


# --- DynamoDB's AttributeValue, already in wire form ---------------------------------------------

_NOT_PLAIN = object()  # the value is not one whose serialised form is proven: moto serialises it
# AttributeValue's members in the model's order (moto writes them in that order), with the shape
# types the fast path relies on: the member's, and its list member's or map value's.
_ATTRIBUTE_VALUE = (
    ("S", "string", None),
    ("N", "string", None),
    ("B", "blob", None),
    ("SS", "list", "string"),
    ("NS", "list", "string"),
    ("BS", "list", "blob"),
    ("M", "map", "structure"),
    ("L", "list", "structure"),
    ("NULL", "boolean", None),
    ("BOOL", "boolean", None),
)
_ATTRIBUTE_VALUE_MEMBERS = frozenset(name for name, _, _ in _ATTRIBUTE_VALUE)
# moto's JSONSerializer methods the fast path stands for: if any is replaced, moto serialises.
_SERIALIZER_METHODS = (
    "_serialize",
    "_serialize_type_map",
    "_serialize_type_list",
    "_serialize_type_string",
    "_serialize_type_boolean",
    "_serialize_structure_member",
    "_default_serialize",
    "get_serialized_name",
    "get_value",
    "MAP_TYPE",
)


def _wire_string(held: Any) -> Any:
    return held if type(held) is str else _NOT_PLAIN  # moto's JSON string: str(value), the same


def _wire_boolean(held: Any) -> Any:
    return held if type(held) is bool else _NOT_PLAIN  # moto's JSON boolean: the value as it is


def _wire_strings(held: Any) -> Any:
    if type(held) is not list or any(type(item) is not str for item in held):
        return _NOT_PLAIN
    return list(held)


def _wire_map(held: Any) -> Any:
    # moto writes an entry named "" into the map itself (an empty key means "the top level")
    if type(held) is not dict or any(type(name) is not str or not name for name in held):
        return _NOT_PLAIN
    entries = {name: _wire_form(item) for name, item in held.items()}
    return _NOT_PLAIN if any(item is _NOT_PLAIN for item in entries.values()) else entries


def _wire_list(held: Any) -> Any:
    if type(held) is not list:
        return _NOT_PLAIN
    items = [_wire_form(item) for item in held]
    return _NOT_PLAIN if any(item is _NOT_PLAIN for item in items) else items


def _wire_blob(held: Any) -> Any:
    return _NOT_PLAIN  # moto encodes bytes in base64 (and str first in UTF-8): left to moto


_WIRE_MEMBER = {
    "S": _wire_string,
    "N": _wire_string,
    "B": _wire_blob,
    "SS": _wire_strings,
    "NS": _wire_strings,
    "BS": _wire_blob,
    "M": _wire_map,
    "L": _wire_list,
    "NULL": _wire_boolean,
    "BOOL": _wire_boolean,
}


def _wire_form(value: Any) -> Any:
    """What moto's JSONSerializer makes of a plain AttributeValue dict, or ``_NOT_PLAIN``.

    Only exact dicts, lists, str and bool are taken (no subclass: an Enum, a Meta, a mapping of
    moto's own may serialise differently), and only AttributeValue's own keys: moto picks each
    member by its name, skips a member whose value is None, and writes members in model order."""
    if type(value) is not dict or not _ATTRIBUTE_VALUE_MEMBERS.issuperset(value):
        return _NOT_PLAIN
    wired: dict[str, Any] = {}
    for member, _, _ in _ATTRIBUTE_VALUE:
        held = value.get(member)
        if held is not None:
            wired[member] = _WIRE_MEMBER[member](held)
            if wired[member] is _NOT_PLAIN:
                return _NOT_PLAIN
    return wired


def _layout_is_as_proven(shape: Any, serialize: Any) -> bool:
    """The model's AttributeValue is the one the fast path stands for: the same members, types and
    names, and moto's alias providers look each member up in a dict by its own name only."""
    members = shape.members
    if shape.is_document_type or list(members) != [name for name, _, _ in _ATTRIBUTE_VALUE]:
        return False
    for name, type_name, inner_type in _ATTRIBUTE_VALUE:
        member = members[name]
        inner = member.member if type_name == "list" else member.value if type_name == "map" else None
        if member.type_name != type_name or "name" in member.serialization:
            return False
        if inner is not None and (inner.type_name != inner_type or "name" in inner.serialization):
            return False
        if inner_type == "structure" and getattr(inner, "name", None) != shape.name:
            return False
        member.parent = shape  # as moto's structure serialiser sets it before picking
        for picker in (serialize.AttributePicker(), serialize.XFormedAttributePicker()):
            context = serialize.AttributePickerContext(obj={}, key=name, shape=member)
            tried = set(picker.get_possible_keys(context))
            if name not in tried or tried & _ATTRIBUTE_VALUE_MEMBERS != {name}:
                return False
    return True


def _serializer_path_taken(serializer: Any, serialize: Any, methods: tuple[Any, ...]) -> bool:
    """moto's JSONSerializer as it was when the fast path was built, with moto's default picker
    and no response transformer (they read member paths, which the fast path does not keep)."""
    picker = serializer._value_picker
    return (
        type(serializer) is serialize.JSONSerializer
        and type(picker) in (serialize.AttributePicker, serialize.XFormedAttributePicker)
        and not picker.response_transformers
        and tuple(picker.alias_providers) == tuple(serialize.DEFAULT_ALIAS_PROVIDERS)
        and tuple(getattr(serialize.JSONSerializer, name, None) for name in _SERIALIZER_METHODS) == methods
    )


def _dynamodb_values_as_they_are() -> tuple[Patch, ...]:
    from moto.core import serialize

    json_serializer: Any = serialize.JSONSerializer
    original = json_serializer._serialize_type_structure
    methods = tuple(getattr(json_serializer, name, None) for name in _SERIALIZER_METHODS)
    proven: dict[tuple[str, str], bool] = {}  # per (service, API version): its model's layout

    def serialize_structure(self: Any, serialized: Any, value: Any, shape: Any, key: str) -> None:
        # moto joins the path of keys for each member it picks: a key not a str raises there
        if (
            key
            and shape.name == "AttributeValue"
            and "name" not in shape.serialization
            and all(type(step) is str for step in self.path)
        ):
            service = self.service_model
            if service.service_name == "dynamodb" and _serializer_path_taken(self, serialize, methods):
                model = (service.service_name, service.api_version)
                if model not in proven:
                    proven[model] = _layout_is_as_proven(shape, serialize)
                wired = _wire_form(value) if proven[model] else _NOT_PLAIN
                if wired is not _NOT_PLAIN:
                    serialized[key] = wired
                    return
        original(self, serialized, value, shape, key)

    return (Patch(json_serializer, "_serialize_type_structure", serialize_structure),)


DYNAMODB_VALUES_AS_THEY_ARE = Fix(
    name="dynamodb-values-as-they-are",
    moto="serialises each DynamoDB attribute value member by member (ten lookups through its "
    "alias providers for a value that holds one)",
    aws="(no difference: a value already in wire form is written as moto would write it)",
    why="Items dominate DynamoDB's answers, and moto's backend already holds each attribute "
    'value as the wire\'s {"S": "x"}: walking the ten members of each through the generic '
    "serialiser rebuilds the same dict at many times the cost.",
    build=_dynamodb_values_as_they_are,
)

# --- KMS: a key's private key made when first used --------------------------------------------

_MAKING_KEY_MATERIAL = threading.Lock()  # not on the key: save/restore deep-copies moto's keys


def _key_material_when_used() -> tuple[Patch, ...]:
    import moto.kms.models
    from moto.kms.utils import AbstractPrivateKey

    models: Any = moto.kms.models  # moto imports the function there without re-exporting it
    make = models.generate_private_key

    class MaterialWhenUsed(AbstractPrivateKey):
        """moto's private key for one KMS key, made by moto's own function on first use."""

        def __init__(self, key_spec: str) -> None:
            self.key_spec = key_spec
            self.made: Any = None

        def __deepcopy__(self, memo: dict[int, Any]) -> MaterialWhenUsed:
            # moto's own key deep-copies to itself (cryptography's keys are immutable): a saved state
            # and every restore of it share one key, made once, whenever the first of them uses it
            return self

        def material(self) -> Any:
            if self.made is None:
                with _MAKING_KEY_MATERIAL:
                    if self.made is None:
                        self.made = make(self.key_spec)
            return self.made

        def sign(self, message: bytes, signing_algorithm: str) -> bytes:
            signature: bytes = self.material().sign(message, signing_algorithm)
            return signature

        def verify(self, message: bytes, signature: bytes, signing_algorithm: str) -> bool:
            return bool(self.material().verify(message, signature, signing_algorithm))

        def public_key(self) -> bytes:
            public: bytes = self.material().public_key()
            return public

    def generate_private_key(key_spec: str) -> MaterialWhenUsed:
        return MaterialWhenUsed(key_spec)

    return (Patch(models, "generate_private_key", generate_private_key),)


KEY_MATERIAL_WHEN_USED = Fix(
    name="key-material-when-used",
    moto="makes an RSA or EC private key for every KMS key it creates, symmetric ones included: "
    "every DynamoDB table and EBS volume that it gives a default key",
    aws="(no difference: the same function makes the same kind of key, the first time one of "
    "Sign, Verify or GetPublicKey needs it)",
    why="Making a 2,048-bit RSA key costs about 0.1 s of CPU, and each test's state table made "
    "one that nothing ever used: about a tenth of the tests' CPU.",
    build=_key_material_when_used,
)

SPEEDUPS: tuple[Fix, ...] = (
    MOTO_MODULES_ONCE,
    METHOD_NAMES_ONCE,
    SERIALIZER_KEYS_ONCE,
    DYNAMODB_VALUES_AS_THEY_ARE,
    KEY_MATERIAL_WHEN_USED,
)
