package gpu

// PCIBusID returns the PCI address of device as the driver prints it
// ("0000:3B:00.0"), for choosing the NIC nearest the GPU. The error wraps
// ErrNotSupported when the driver lacks the call.
func (d *Driver) PCIBusID(device int) (string, error) {
	if err := d.enter(); err != nil {
		return "", err
	}
	defer d.mu.RUnlock()
	return d.b.pciBusID(device)
}
