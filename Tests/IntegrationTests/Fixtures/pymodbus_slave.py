#!/usr/bin/env python3
"""An independent Modbus slave for railgate's tests: pymodbus (from PyPI) serving a fixed map.

    pymodbus_slave.py rtu-over-tcp PORT UNIT   TCP server with the RTU framer (0: any free port)
    pymodbus_slave.py ascii DEVICE UNIT        serial server with the ASCII framer (8N1, 19200: pyserial
                                               cannot set 7E1 on a pty, tcsetattr says EINVAL)

Prints "serving on PORT" (or "serving on DEVICE") once it listens. The map holds every type
railgate decodes since issue 16; the expected values are in field-types.toml's comments and
FieldModbusTests.swift.
"""

import asyncio
import logging
import socket
import struct
import sys

import pymodbus
from pymodbus.datastore import ModbusSequentialDataBlock, ModbusServerContext
from pymodbus.framer import FramerType
from pymodbus.server import ModbusSerialServer, ModbusTcpServer

try:  # pymodbus >= 3.10
    from pymodbus.datastore import ModbusDeviceContext as DeviceContext
except ImportError:  # pymodbus 3.0 - 3.9
    from pymodbus.datastore import ModbusSlaveContext as DeviceContext


def f16(value):
    return struct.unpack(">H", struct.pack(">e", value))[0]


HOLDING = [
    0x8025,  # 0: flags: bits 0, 2, 5, 15 set
    0xC8FB,  # 1: u8 high = 200, i8 low = -5
    f16(24.5),  # 2: f16 24.5
    0x1234,  # 3: bcd16 1234
    0x1234, 0x5678,  # 4-5: bcd32 12345678
    0x0001,  # 6: f16 smallest subnormal, 2^-24
    0x7E00,  # 7: f16 NaN -> errors "nan"
    0xFC00,  # 8: f16 -Inf -> errors "inf"
    0x12A4,  # 9: bcd16 with nibble A -> errors "invalid"
    0xFFFF, 0xFFFF,  # 10-11: u32 counter at 4294967295, about to wrap
    0x7B80,  # 12: u8 low = 0x80 = 128, i8 high = 0x7B = 123
]
INPUT = [0] * 100 + [0x0135, 0x2A09, 0x0312]  # 100-101: serial u32 20261385; 102: firmware bcd16 312


def block(values):
    # Device contexts add 1 to the address asked (the Modbus data model's 1-based registers):
    # the block starts at 1 so that address 0 on the wire is values[0].
    return ModbusSequentialDataBlock(1, values)


def context(unit):
    device = DeviceContext(hr=block(HOLDING), ir=block(INPUT))
    try:
        return ModbusServerContext(devices={unit: device}, single=False)
    except TypeError:  # pymodbus < 3.10
        return ModbusServerContext(slaves={unit: device}, single=False)


async def main():
    mode, where, unit = sys.argv[1], sys.argv[2], int(sys.argv[3])
    logging.basicConfig(level=logging.ERROR)
    if mode == "rtu-over-tcp":
        port = int(where)
        if port == 0:
            probe = socket.socket()
            probe.bind(("127.0.0.1", 0))
            port = probe.getsockname()[1]
            probe.close()
        server = ModbusTcpServer(context(unit), framer=FramerType.RTU, address=("127.0.0.1", port))
        label = str(port)
    elif mode == "ascii":
        server = ModbusSerialServer(
            context(unit), framer=FramerType.ASCII, port=where, baudrate=19200, bytesize=8, parity="N", stopbits=1)
        label = where
    else:
        sys.exit(f"unknown mode {mode}")
    task = asyncio.create_task(server.serve_forever())
    for _ in range(200):
        await asyncio.sleep(0.05)
        if getattr(server, "transport", None) is not None or getattr(server, "active_connections", None):
            break
    print(f"serving on {label} (pymodbus {pymodbus.__version__})", flush=True)
    await task


if __name__ == "__main__":
    asyncio.run(main())
