# railgate: `make demo` and `make test` set up everything on a fresh Debian 12 machine.

SWIFT       ?= swift
SUDO        := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
DEB_PACKAGES := pkg-config libmodbus-dev libmosquitto-dev libgpiod-dev zlib1g-dev libssl-dev openssl mosquitto mosquitto-clients socat mbpoll libsqlite3-dev python3-venv tmux
# What `make test-vm` needs beyond them: qemu (TCG), the kit's initramfs (static busybox,
# cpio), ext4 tools for the disk image (mkfs.ext4, e2fsck, debugfs), strip.
VM_DEB_PACKAGES := qemu-system-x86 busybox-static cpio e2fsprogs binutils
## pymodbus, an independent Modbus slave for the tests (RTU over TCP, ASCII), in a venv under .build.
PYVENV      := .build/pyvenv
PY_PACKAGES := pymodbus==3.16.1 pyserial==3.5
BIN         := .build/debug

.PHONY: all deps pydeps build build-gpiod2 test test-vm test-vm-gpio lint demo bench bench-scale bench-soak install \
        clean release release-size deb system-deps test-system fuzz fuzz-ci fuzz-build completions man


all: build

## Installs the Debian packages that are missing (apt-get as root, else through sudo).
deps:
	@missing=""; for p in $(DEB_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
	  echo "installing:$$missing"; \
	  $(SUDO) apt-get update -qq && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq $$missing; \
	fi
	@command -v $(SWIFT) >/dev/null || { echo "Swift 6 is needed (swift.org toolchain on PATH)"; exit 1; }

build: deps
	$(SWIFT) build

## The test venv with pymodbus and pyserial from PyPI, made only if they are not importable there.
pydeps: deps
	@$(PYVENV)/bin/python -c "import pymodbus, serial" 2>/dev/null || { \
	  rm -rf $(PYVENV) && python3 -m venv $(PYVENV) && \
	  $(PYVENV)/bin/python -m pip install -q --disable-pip-version-check $(PY_PACKAGES); }

## Builds everything and runs every test: unit tests, then integration tests with a real
## Mosquitto, the simulators and the daemon as processes.
test: deps pydeps
	$(SWIFT) build --build-tests
	$(MAKE) --no-print-directory completions man
	$(SWIFT) test --skip-build

## railgate built against libgpiod 2.x (the v2 API) as well: libgpiod 2.1.3 from
## bookworm-backports unpacked into .build/gpiod2 (the system keeps its 1.6), the build in
## .build-gpiod2 (.ci/gpiod2.sh). `railgate --version` names the libgpiod each build uses.
build-gpiod2: deps
	.ci/gpiod2.sh build -c release --static-swift-stdlib --product railgate

## GPIO on a real kernel (Tests/IntegrationTests/GPIOKernelTests.swift): the VM kit's kernel
## (../shared/vm or RAILGATE_VM_KIT) makes GPIO chips with gpio-sim; the daemon, `gpio info` and
## `gpio watch` run against them next to gpioinfo/gpiomon, once with the v1 backend (Debian's
## libgpiod 1.6 and its tools) and once with the v2 backend (libgpiod 2.1.3 and its tools).
## About 75 s for both backends once built (measured); skips with the reason where the kit is missing.
GPIO_VM_DEB_PACKAGES := qemu-system-x86 busybox-static cpio binutils gpiod
test-vm: test-vm-gpio
test-vm-gpio: deps build-gpiod2
	@missing=""; for p in $(GPIO_VM_DEB_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
	  echo "installing:$$missing"; \
	  $(SUDO) apt-get update -qq && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq $$missing; \
	fi
	$(SWIFT) build -c release --static-swift-stdlib --product railgate
	$(SWIFT) build --build-tests
	RAILGATE_VM_TESTS=1 $(SWIFT) test --skip-build --filter GPIOKernelTests

## The power-cut test (Tests/IntegrationTests/PowerCutTests.swift): 32 times, a small Linux VM
## (the kit in ../shared/vm, or RAILGATE_VM_KIT) runs the daemon with its state_dir on a virtio
## disk and is SIGKILLed at a random moment; the buffer on the image is checked after each
## cut. About 5 minutes; skips with a message where the kit is missing. `make test-vm` runs
## test-vm-gpio (above) first.
test-vm: deps
	@missing=""; for p in $(VM_DEB_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
	  echo "installing:$$missing"; \
	  $(SUDO) apt-get update -qq && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq $$missing; \
	fi
	$(MAKE) release
	$(SWIFT) build --build-tests
	RAILGATE_VM_TESTS=1 $(SWIFT) test --skip-build --filter PowerCutTests

## libFuzzer (Fuzz/README.md): railgate's library modules built with libFuzzer's coverage and
## AddressSanitizer under .build/fuzz/lib, one binary per target (Fuzz/Targets/NAME.swift and
## its harness in Tests/FuzzTests/Harness, which `make test` replays over the committed inputs).
## `make fuzz` runs each target FUZZ_SECONDS (default 60); `make fuzz-ci` is CI's step: every
## target at least 60 s, all of them even after a crash, each crashing input's path printed, a
## non-zero exit if there was one. FUZZ_TARGETS narrows the run: `make fuzz FUZZ_TARGETS=modbus`.
SWIFTC       ?= swiftc
FUZZ_SECONDS ?= 60
FUZZ_TARGETS ?= toml json config registers modbus buffer simchip
FUZZ_DIR     := .build/fuzz
FUZZ_LIB     := $(FUZZ_DIR)/lib
FUZZ_FLAGS   := -sanitize=fuzzer,address -parse-as-library -O -I $(FUZZ_LIB) -I Sources/CZlib -I $(FUZZ_DIR)/CGPIODShim
FUZZ_MODULES := RailgateCore RailgateSystem RailgateBuffer RailgateGPIO
# Static libraries link dependents first.
FUZZ_LINK    := -lRailgateGPIO -lRailgateBuffer -lRailgateSystem -lRailgateCore
FUZZ_HARNESS := Tests/FuzzTests/Harness
fuzz_source   = Fuzz/Targets/$(1).swift $(FUZZ_HARNESS)/$(2).swift
FUZZ_SOURCES_toml      := $(call fuzz_source,TOMLFuzz,TOMLHarness)
FUZZ_SOURCES_json      := $(call fuzz_source,JSONFuzz,TOMLHarness)
FUZZ_SOURCES_config    := $(call fuzz_source,ConfigFuzz,ConfigHarness)
FUZZ_SOURCES_registers := $(call fuzz_source,RegisterFuzz,RegisterHarness)
FUZZ_SOURCES_modbus    := $(call fuzz_source,ModbusFuzz,ModbusReplyHarness)
FUZZ_SOURCES_buffer    := $(call fuzz_source,BufferFuzz,BufferRecoveryHarness)
FUZZ_SOURCES_simchip   := $(call fuzz_source,SimulatedChipFuzz,SimulatedChipHarness)

# One static library and .swiftmodule per module, after the modules it imports.
$(FUZZ_LIB)/libRailgateCore.a: $(wildcard Sources/RailgateCore/*.swift)
$(FUZZ_LIB)/libRailgateSystem.a: $(wildcard Sources/RailgateSystem/*.swift) $(FUZZ_LIB)/libRailgateCore.a
$(FUZZ_LIB)/libRailgateBuffer.a: $(wildcard Sources/RailgateBuffer/*.swift) $(FUZZ_LIB)/libRailgateSystem.a
$(FUZZ_LIB)/libRailgateGPIO.a: $(wildcard Sources/RailgateGPIO/*.swift) $(FUZZ_LIB)/libRailgateSystem.a \
		$(FUZZ_DIR)/CGPIODShim/module.modulemap $(FUZZ_LIB)/railgate_gpio.o
$(FUZZ_LIB)/libRailgate%.a:
	mkdir -p $(FUZZ_LIB)
	$(SWIFTC) $(FUZZ_FLAGS) -module-name Railgate$* -emit-module -emit-module-path $(FUZZ_LIB)/Railgate$*.swiftmodule \
		-emit-library -static -o $@ $(filter %.swift,$^)
# The libgpiod shim (a C target in SwiftPM) as an object and a module map.
$(FUZZ_LIB)/railgate_gpio.o: Sources/CGPIODShim/railgate_gpio.c Sources/CGPIODShim/include/railgate_gpio.h
	mkdir -p $(FUZZ_LIB)
	clang -c -O1 -fPIC $$(pkg-config --cflags libgpiod) -I Sources/CGPIODShim/include $< -o $@
$(FUZZ_DIR)/CGPIODShim/module.modulemap: Sources/CGPIODShim/include/railgate_gpio.h
	mkdir -p $(@D)
	printf 'module CGPIODShim {\n    header "%s"\n    export *\n}\n' "$(abspath $<)" > $@

.SECONDEXPANSION:
$(FUZZ_DIR)/%-fuzz: $(FUZZ_MODULES:%=$(FUZZ_LIB)/lib%.a) Fuzz/Targets/FuzzEntry.swift $(FUZZ_HARNESS)/FuzzInput.swift \
		$$(FUZZ_SOURCES_$$*)
	$(SWIFTC) $(FUZZ_FLAGS) -module-name Fuzz Fuzz/Targets/FuzzEntry.swift $(FUZZ_HARNESS)/FuzzInput.swift \
		$(FUZZ_SOURCES_$*) -L $(FUZZ_LIB) $(FUZZ_LINK) $(FUZZ_LIB)/railgate_gpio.o -lgpiod -lz -o $@

fuzz-build: deps $(FUZZ_TARGETS:%=$(FUZZ_DIR)/%-fuzz)

fuzz: fuzz-build
	Fuzz/run.sh $(FUZZ_SECONDS) $(FUZZ_TARGETS)

FUZZ_CI_SECONDS = $(shell [ $(FUZZ_SECONDS) -ge 60 ] && echo $(FUZZ_SECONDS) || echo 60)
fuzz-ci: fuzz-build
	Fuzz/run.sh $(FUZZ_CI_SECONDS) $(FUZZ_TARGETS)

## Formatting and style (.swift-format: 4 spaces, 120 columns, ordered imports).
lint:
	$(SWIFT) format lint --strict -r Sources Simulators Tests Package.swift

## The gateway on simulated wagons against a local broker; telemetry scrolls until Ctrl-C.
demo: build
	Simulators/demo.sh $(BIN)

## Shell completions for bash, zsh and fish, generated from the command definitions
## (swift-argument-parser's --generate-completion-script), in .build/completions.
COMPLETIONS_DIR := .build/completions
completions: build
	mkdir -p $(COMPLETIONS_DIR)
	for tool in railgate railgate-sim; do \
	  $(BIN)/$$tool --generate-completion-script bash > $(COMPLETIONS_DIR)/$$tool.bash && \
	  $(BIN)/$$tool --generate-completion-script zsh > $(COMPLETIONS_DIR)/_$$tool && \
	  $(BIN)/$$tool --generate-completion-script fish > $(COMPLETIONS_DIR)/$$tool.fish || exit 1; \
	done

## Man pages railgate(1) and railgate-sim(1), generated from the command definitions (abstracts,
## discussions with examples, options) by swift-argument-parser's generate-manual plugin, which
## resolves from the package's own dependency (no network); in .build/man. The date is the last
## commit's, so the pages do not change from build to build.
MAN_DIR  := .build/man
MAN_DATE := $(shell git log -1 --format=%cs 2>/dev/null || date +%F)
man: build
	$(SWIFT) package generate-manual --configuration debug --date $(MAN_DATE) --section 1 \
	  --authors "railgate developers<railgate@example.org>"
	mkdir -p $(MAN_DIR)
	for tool in railgate railgate-sim; do \
	  cp .build/plugins/GenerateManual/outputs/$$tool/$$tool.1 $(MAN_DIR)/$$tool.1 || exit 1; \
	done

## Throughput and footprint, each as a ratio against a baseline run in the same invocation; the
## uplink's drain of 1,000,000 points and start-up to the first record run the release daemon
## against a local Mosquitto (`railgate-bench upstream` runs only the upstream figures); then
## the scale figures (Sources/railgate-bench/ScaleBench.swift): the release gateway on a
## simulated fleet of 100 devices x 100 f32 to a local Mosquitto at 10,000 and 100,000 points/s,
## and idle. About 6 minutes. Durations (seconds) from the environment: RAILGATE_BENCH_WARMUP_S
## (10), RAILGATE_BENCH_SCALE_S (60), RAILGATE_BENCH_STRESS_S (60), RAILGATE_BENCH_IDLE_S (10);
## RAILGATE_BENCH_BUSES (4) TCP buses. `make bench-scale` runs only the scale figures.
## railgate-bench is built with the same flags as `make release`: switching between static and
## shared Swift runtime builds recompiles every module.
bench: deps release
	$(SWIFT) build -c release --static-swift-stdlib --product railgate-bench
	.build/release/railgate-bench
	Packaging/release-size.sh .build/release/railgate .build/release/railgate-sim

bench-scale: deps release
	$(SWIFT) build -c release --static-swift-stdlib --product railgate-bench
	.build/release/railgate-bench scale

## The 10,000 points/s fleet for RAILGATE_BENCH_SOAK_S (600) seconds: RSS and open fds every
## minute, flat or not at the end. Not part of `make test` or CI.
bench-soak: deps release
	$(SWIFT) build -c release --static-swift-stdlib --product railgate-bench
	.build/release/railgate-bench soak

## The release binaries: Swift's runtime linked statically (the C libraries stay shared).
release: deps
	$(SWIFT) build -c release --static-swift-stdlib --product railgate
	$(SWIFT) build -c release --static-swift-stdlib --product railgate-sim

## railgate_VERSION_ARCH.deb in .build/deb (Packaging/build-deb.sh): stripped binaries, Depends:
## from their shared libraries (dpkg-shlibdeps), unit, sysusers, tmpfiles, profiles, and the
## example configuration as a conffile (root:railgate 0640 through a stat override).
deb: release completions man
	Packaging/build-deb.sh .build/deb

## Installs a release build, the systemd unit, sysusers and tmpfiles entries, and the profiles.
## The C libraries stay shared: the box needs libmodbus5, libmosquitto1, libgpiod2 and zlib1g.
## The configuration ends up root:railgate 0640: the unit runs (and checks it) as railgate.
PREFIX  ?= /usr
DESTDIR ?=
install: release completions man
	install -D -m 0755 .build/release/railgate $(DESTDIR)$(PREFIX)/bin/railgate
	install -D -m 0755 .build/release/railgate-sim $(DESTDIR)$(PREFIX)/bin/railgate-sim
	strip --strip-unneeded $(DESTDIR)$(PREFIX)/bin/railgate $(DESTDIR)$(PREFIX)/bin/railgate-sim
	install -D -m 0644 Systemd/railgate.service $(DESTDIR)/usr/lib/systemd/system/railgate.service
	install -D -m 0644 Systemd/railgate.sysusers $(DESTDIR)/usr/lib/sysusers.d/railgate.conf
	install -D -m 0644 Systemd/railgate.tmpfiles $(DESTDIR)/usr/lib/tmpfiles.d/railgate.conf
	install -d $(DESTDIR)/usr/share/railgate/profiles
	install -m 0644 Firmware-config/profiles/*.toml $(DESTDIR)/usr/share/railgate/profiles/
	install -D -m 0644 README.md $(DESTDIR)/usr/share/doc/railgate/README.md
	for tool in railgate railgate-sim; do \
	  install -D -m 0644 $(COMPLETIONS_DIR)/$$tool.bash $(DESTDIR)/usr/share/bash-completion/completions/$$tool && \
	  install -D -m 0644 $(COMPLETIONS_DIR)/_$$tool $(DESTDIR)/usr/share/zsh/vendor-completions/_$$tool && \
	  install -D -m 0644 $(COMPLETIONS_DIR)/$$tool.fish $(DESTDIR)/usr/share/fish/vendor_completions.d/$$tool.fish && \
	  install -d $(DESTDIR)/usr/share/man/man1 && \
	  gzip -9n -c $(MAN_DIR)/$$tool.1 > $(DESTDIR)/usr/share/man/man1/$$tool.1.gz || exit 1; \
	done
	[ -e $(DESTDIR)/etc/railgate/railgate.toml ] || \
	  install -D -m 0640 Firmware-config/examples/wagon.toml $(DESTDIR)/etc/railgate/railgate.toml
	@if [ -z "$(DESTDIR)" ]; then \
	  systemd-sysusers /usr/lib/sysusers.d/railgate.conf && \
	  chgrp railgate /etc/railgate/railgate.toml && chmod 0640 /etc/railgate/railgate.toml && \
	  systemd-tmpfiles --create /usr/lib/tmpfiles.d/railgate.conf; \
	else \
	  echo "DESTDIR install: on the box run systemd-sysusers, then chgrp railgate /etc/railgate/railgate.toml"; \
	fi

## What `make test-system` needs besides `make deps`: debootstrap and systemd-nspawn for the
## booted Debian 12 container, lintian for the package, python3 to read the broker's messages.
SYSTEM_TEST_PACKAGES := debootstrap systemd-container lintian python3 binutils
system-deps: deps
	@missing=""; for p in $(SYSTEM_TEST_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
	  echo "installing:$$missing"; \
	  $(SUDO) apt-get update -qq && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq $$missing; \
	fi

## The package and the unit for real (root): the unit's exposure score (fails above 2.5), the
## .deb's metadata, contents and lintian, then the .deb installed in a debootstrapped Debian 12
## booted with systemd-nspawn (tree cached in .build/systemd-test). Tests/System/README.md.
test-system: system-deps deb
	Tests/System/security-test.sh
	Tests/System/deb-test.sh .build/deb/railgate_*.deb
	Tests/System/systemd-test.sh .build/deb/railgate_*.deb

clean:
	rm -rf .build /tmp/railgate-demo

## The release binaries' size stripped and what makes it up (Packaging/release-size.sh):
## sections, the shared C libraries left, code by Swift module and the static Swift runtime.
release-size: release
	Packaging/release-size.sh .build/release/railgate .build/release/railgate-sim
