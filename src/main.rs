fn main() {
    println!("thermostat-server {}", env!("CARGO_PKG_VERSION"));
}
