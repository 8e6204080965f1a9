"""Arrays that keep CuPy's rules, on the host: the strict stand-in's device (gpurisk.parity.
StrictStandInBackend), so CI finds the gpu backend's mixing of host and device arrays before a
card does.

CuPy's rules, as the stand-in keeps them (no GPU has run the gpu backend yet, so these are
what a card would raise on first):

- a device array never turns into a NumPy array implicitly: ``np.asarray(d)``,
  ``np.ascontiguousarray(d)``, a NumPy array indexed by it or filled from it raise TypeError
  (``backend.to_host`` is the way across, and what it copies is counted);
- a ufunc or an array function (``np.add``, ``+``, ``np.concatenate``, ``xp.bincount``...)
  refuses a NumPy array among device arrays (NumPy scalars and Python numbers are fine), and
  its results are device arrays, reductions too (0-d, as CuPy returns them);
- ``ufunc.at`` on the device is refused for floats: CuPy adds them with atomics, in no fixed
  order, and the project's sums must not depend on the order of threads;
- host arrays may go to the device implicitly where CuPy takes them: ``xp.asarray``, an index
  into a device array, a value written into one (counted as traffic to the device);
- device arrays have no ``ctypes`` (a kernel reads them through the backend's launch only).

The arithmetic is NumPy's, so every result has the bits the cpu backend gives.
"""

from __future__ import annotations

import numpy as np


class DeviceTraffic:
    """Bytes copied between host and stand-in device, by direction."""

    def __init__(self):
        self.to_device = 0
        self.to_host = 0

    def reset(self) -> None:
        self.to_device = self.to_host = 0


class DeviceArray:
    """A host array standing in for a device array: see the module docstring."""

    __slots__ = ("_a", "_traffic")

    def __init__(self, a: np.ndarray, traffic: DeviceTraffic):
        self._a, self._traffic = a, traffic

    # ------------------------------------------------------------ what CuPy refuses
    def __array__(self, dtype=None, copy=None):
        raise TypeError("Implicit conversion to a NumPy array is not allowed (a device array on the strict "
                        "stand-in, as in CuPy): copy it with backend.to_host(...)")

    # ------------------------------------------------------------ NumPy's protocols
    def __array_ufunc__(self, ufunc, method, *inputs, **kwargs):
        name = f"{ufunc.__name__}.{method}" if method != "__call__" else ufunc.__name__
        if method == "at" and np.dtype(_unwrap(inputs[0], name).dtype).kind == "f":
            raise TypeError(f"{name} on a float device array: CuPy adds with atomics, in no fixed order; "
                            "the project's float sums must run in a fixed order")
        given = _given(inputs, kwargs)  # before unwrapping: an out= array comes back as itself
        args = _unwrap(inputs, name)
        if "out" in kwargs:
            kwargs["out"] = _unwrap(kwargs["out"], name)
        result = getattr(ufunc, method)(*args, **kwargs)
        return None if method == "at" else _wrap(result, self._traffic, given)

    def __array_function__(self, func, types, args, kwargs):
        name = func.__name__
        return _wrap(func(*_unwrap(args, name), **_unwrap(kwargs, name)), self._traffic, _given(args, kwargs))

    # ------------------------------------------------------------ the array's face
    # (shape, dtype, size, flags... and methods come from the host array: see __getattr__)
    def __len__(self):
        return len(self._a)

    def __iter__(self):
        return (_wrap(x, self._traffic) for x in self._a)

    def __repr__(self):
        return f"DeviceArray({self._a!r})"

    def __getitem__(self, key):
        return _wrap(self._a[self._key(key)], self._traffic)

    def __setitem__(self, key, value):
        if isinstance(value, np.ndarray):  # host to device, as CuPy copies it
            self._traffic.to_device += value.nbytes
        self._a[self._key(key)] = value._a if isinstance(value, DeviceArray) else value

    def _key(self, key):
        """An index as CuPy takes it: device arrays, or host arrays and lists copied over."""
        parts = key if isinstance(key, tuple) else (key,)
        out = []
        for k in parts:
            if isinstance(k, DeviceArray):
                k = k._a
            elif isinstance(k, np.ndarray):
                self._traffic.to_device += k.nbytes
            out.append(k)
        return tuple(out) if isinstance(key, tuple) else out[0]

    def __getattr__(self, name):
        if name.startswith("__"):  # NumPy's doors to the memory (__array_interface__...) stay shut
            raise AttributeError(name)
        if name == "ctypes":
            raise AttributeError("a device array has no ctypes: kernels read it through backend.launch")
        attr = getattr(self._a, name)
        if not callable(attr):
            return _wrap(attr, self._traffic)

        def method(*args, **kwargs):
            return _wrap(attr(*_unwrap(args, name, lenient=True), **_unwrap(kwargs, name, lenient=True)),
                         self._traffic)

        return method

    def tolist(self):
        self._traffic.to_host += self._a.nbytes
        return self._a.tolist()

    def item(self, *args):
        return self._a.item(*args)

    def get(self) -> np.ndarray:
        """CuPy's explicit copy to the host."""
        self._traffic.to_host += self._a.nbytes
        return self._a.copy()

    # 0-d (and size-1) arrays to Python numbers, as CuPy allows (a synchronisation)
    def __float__(self):
        return float(self._a)

    def __int__(self):
        return int(self._a)

    def __bool__(self):
        return bool(self._a)

    def __index__(self):
        return self._a.__index__()

    def __format__(self, spec):
        return format(self._a, spec) if self._a.ndim == 0 else format(str(self), spec)


def _binary(ufunc):
    def op(self, other):
        return ufunc(self, other)

    def rop(self, other):
        return ufunc(other, self)

    def iop(self, other):
        ufunc(self, other, out=self)
        return self

    return op, rop, iop


for _name, _ufunc in (("add", np.add), ("sub", np.subtract), ("mul", np.multiply), ("truediv", np.true_divide),
                      ("floordiv", np.floor_divide), ("mod", np.remainder), ("pow", np.power),
                      ("and", np.bitwise_and), ("or", np.bitwise_or), ("xor", np.bitwise_xor),
                      ("lshift", np.left_shift), ("rshift", np.right_shift)):
    _op, _rop, _iop = _binary(_ufunc)
    setattr(DeviceArray, f"__{_name}__", _op)
    setattr(DeviceArray, f"__r{_name}__", _rop)
    setattr(DeviceArray, f"__i{_name}__", _iop)
for _name, _ufunc in (("lt", np.less), ("le", np.less_equal), ("gt", np.greater), ("ge", np.greater_equal),
                      ("eq", np.equal), ("ne", np.not_equal)):
    setattr(DeviceArray, f"__{_name}__", _binary(_ufunc)[0])
DeviceArray.__neg__ = lambda self: np.negative(self)
DeviceArray.__pos__ = lambda self: np.positive(self)
DeviceArray.__abs__ = lambda self: np.absolute(self)
DeviceArray.__invert__ = lambda self: np.invert(self)
DeviceArray.__hash__ = None


def _unwrap(value, name: str, lenient: bool = False):
    """Device arrays to their host arrays; a NumPy array among them refused (CuPy's rule),
    unless ``lenient`` (a method's arguments: CuPy converts some)."""
    if isinstance(value, DeviceArray):
        return value._a
    if isinstance(value, np.ndarray):
        if lenient:
            return value
        raise TypeError(f"{name}: a NumPy array among device arrays (shape {value.shape}, {value.dtype}); "
                        "CuPy refuses host arrays here: copy it with backend.asarray(...) first")
    if isinstance(value, (list, tuple)):
        return type(value)(_unwrap(v, name, lenient) for v in value)
    if isinstance(value, dict):
        return {k: _unwrap(v, name, lenient) for k, v in value.items()}
    return value


def _given(args, kwargs) -> dict:
    """The device arrays among a call's arguments, by their host arrays' identity: a result
    that is one of them (``out=``) comes back as the array given, as CuPy returns it."""
    found = {}

    def visit(v):
        if isinstance(v, DeviceArray):
            found[id(v._a)] = v
        elif isinstance(v, (list, tuple)):
            for x in v:
                visit(x)

    visit(args)
    visit(tuple(kwargs.values()))
    return found


def _wrap(value, traffic: DeviceTraffic, given: dict | None = None):
    """NumPy results as device arrays (scalars of a reduction as 0-d arrays, as CuPy returns
    them; an ``out`` array given as itself); containers element by element."""
    if isinstance(value, np.ndarray):
        if given and id(value) in given and given[id(value)]._a is value:
            return given[id(value)]
        return DeviceArray(value, traffic)
    if isinstance(value, np.generic):
        return DeviceArray(np.asarray(value), traffic)
    if isinstance(value, tuple):
        return tuple(_wrap(v, traffic, given) for v in value)
    if isinstance(value, list):
        return [_wrap(v, traffic, given) for v in value]
    return value


class DeviceNamespace:
    """``xp`` of the strict stand-in: NumPy's functions under CuPy's rules. Creation functions
    and ``asarray`` take host data (copied to the device, counted); every other function
    refuses host arrays and returns device arrays."""

    _TAKES_HOST = {"asarray", "array", "ascontiguousarray", "asanyarray"}
    _CREATES = {"empty", "zeros", "ones", "full", "arange", "linspace", "empty_like", "zeros_like", "ones_like",
                "full_like", "frombuffer", "eye", "identity"}

    def __init__(self, traffic: DeviceTraffic):
        self.traffic = traffic
        self.ndarray = DeviceArray

    def __getattr__(self, name):
        attr = getattr(np, name)
        if not callable(attr) or isinstance(attr, type) or name in ("dtype", "iinfo", "finfo", "errstate"):
            return attr  # dtypes, constants, NumPy's helpers that hold no arrays
        traffic = self.traffic
        if name in self._TAKES_HOST:
            def to_device(a, dtype=None, **kwargs):
                if isinstance(a, DeviceArray):  # already on the device: no copy unless asked
                    arr = a._a if dtype is None or a.dtype == np.dtype(dtype) else a._a.astype(dtype)
                    if name == "ascontiguousarray":
                        arr = np.ascontiguousarray(arr)
                    if name == "array" and kwargs.get("copy", True) and arr is a._a:
                        arr = arr.copy()
                    return a if arr is a._a else DeviceArray(arr, traffic)
                host = np.array(a, dtype=dtype, copy=True, order="C")
                traffic.to_device += host.nbytes
                return DeviceArray(host, traffic)

            return to_device

        def function(*args, **kwargs):
            given = _given(args, kwargs)
            if name not in self._CREATES or "like" in name:
                args, kwargs = _unwrap(args, name), _unwrap(kwargs, name)
            return _wrap(attr(*args, **kwargs), traffic, given)

        return function

    def __repr__(self):
        return "<the strict stand-in's xp: NumPy under CuPy's rules>"
