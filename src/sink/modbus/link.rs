//! The `modbus` sink's link to its device: connecting over TCP or RTU and writing coils and
//! holding registers, every request bounded by `timeout_ms`. The protocol (framing, CRC,
//! transaction ids, exception replies) is tokio-modbus's synchronous client; this module only
//! opens it and turns its results into typed errors. What to write and when is the actuator
//! loop's ([`super::run`]).

use std::net::{SocketAddr, ToSocketAddrs};
use std::time::Duration;

use tokio_modbus::client::sync::{Context, Writer};
use tokio_modbus::{ExceptionCode, Slave};

use super::config::ModbusSinkConfig;

/// Where the device is and how to reach it, parsed from a validated config.
#[derive(Debug, Clone)]
pub enum Endpoint {
    Tcp {
        host: String,
        port: u16,
    },
    Rtu {
        device: String,
        baud: u32,
        parity: tokio_serial::Parity,
        stop_bits: tokio_serial::StopBits,
    },
}

impl Endpoint {
    /// The endpoint of a validated config (`None` when a required key is missing).
    pub fn from_config(cfg: &ModbusSinkConfig) -> Option<Endpoint> {
        Some(match cfg.transport.as_str() {
            "rtu" => Endpoint::Rtu {
                device: cfg.device.clone()?,
                baud: cfg.baud,
                parity: match cfg.parity.as_str() {
                    "even" => tokio_serial::Parity::Even,
                    "odd" => tokio_serial::Parity::Odd,
                    _ => tokio_serial::Parity::None,
                },
                stop_bits: if cfg.stop_bits == 2 {
                    tokio_serial::StopBits::Two
                } else {
                    tokio_serial::StopBits::One
                },
            },
            _ => Endpoint::Tcp {
                host: cfg.host.clone()?,
                port: cfg.port,
            },
        })
    }

    /// For logs and errors: `tcp:plc:502` or `rtu:/dev/ttyUSB0`.
    pub fn describe(&self) -> String {
        match self {
            Endpoint::Tcp { host, port } => format!("tcp:{host}:{port}"),
            Endpoint::Rtu { device, .. } => format!("rtu:{device}"),
        }
    }
}

/// A failed connect or request.
#[derive(Debug, thiserror::Error)]
pub enum LinkError {
    #[error("cannot connect to {what}")]
    Connect {
        what: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{what} failed")]
    Request {
        what: String,
        #[source]
        source: tokio_modbus::Error,
    },
    #[error("the device refused {what}: exception {code}")]
    Exception { what: String, code: ExceptionCode },
}

/// An open connection to one unit.
pub struct Link {
    ctx: Context,
    endpoint: String,
}

impl Link {
    /// Connects (TCP) or opens the serial line (RTU), within `timeout`.
    pub fn connect(endpoint: &Endpoint, unit_id: u8, timeout: Duration) -> Result<Link, LinkError> {
        let what = endpoint.describe();
        let err = |source| LinkError::Connect {
            what: what.clone(),
            source,
        };
        let slave = Slave(unit_id);
        let ctx = match endpoint {
            Endpoint::Tcp { host, port } => {
                let addr: SocketAddr = (host.as_str(), *port)
                    .to_socket_addrs()
                    .map_err(err)?
                    .next()
                    .ok_or_else(|| {
                        err(std::io::Error::new(
                            std::io::ErrorKind::NotFound,
                            format!("host {host:?} has no address"),
                        ))
                    })?;
                tokio_modbus::client::sync::tcp::connect_slave_with_timeout(
                    addr,
                    slave,
                    Some(timeout),
                )
                .map_err(err)?
            }
            Endpoint::Rtu {
                device,
                baud,
                parity,
                stop_bits,
            } => {
                let builder = tokio_serial::new(device, *baud)
                    .parity(*parity)
                    .stop_bits(*stop_bits)
                    .data_bits(tokio_serial::DataBits::Eight)
                    .timeout(timeout);
                tokio_modbus::client::sync::rtu::connect_slave_with_timeout(
                    &builder,
                    slave,
                    Some(timeout),
                )
                .map_err(err)?
            }
        };
        Ok(Link {
            ctx,
            endpoint: what,
        })
    }

    /// Writes one coil.
    pub fn write_coil(&mut self, address: u16, on: bool) -> Result<(), LinkError> {
        let what = || format!("writing coil {address} on {}", self.endpoint);
        match self.ctx.write_single_coil(address, on) {
            Ok(Ok(())) => Ok(()),
            Ok(Err(code)) => Err(LinkError::Exception { what: what(), code }),
            Err(source) => Err(LinkError::Request {
                what: what(),
                source,
            }),
        }
    }

    /// Writes consecutive holding registers from `address`.
    pub fn write_registers(&mut self, address: u16, words: &[u16]) -> Result<(), LinkError> {
        let what = || {
            format!(
                "writing {} register(s) at {address} on {}",
                words.len(),
                self.endpoint
            )
        };
        match self.ctx.write_multiple_registers(address, words) {
            Ok(Ok(())) => Ok(()),
            Ok(Err(code)) => Err(LinkError::Exception { what: what(), code }),
            Err(source) => Err(LinkError::Request {
                what: what(),
                source,
            }),
        }
    }
}
