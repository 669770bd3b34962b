#[test]
fn eight_storage_buffers() {
    let instance = wgpu::Instance::default();
    let adapter =
        pollster::block_on(instance.request_adapter(&wgpu::RequestAdapterOptions::default()))
            .unwrap();
    let desc = wgpu::DeviceDescriptor {
        required_limits: wgpu::Limits::default(),
        ..Default::default()
    };
    eprintln!(
        "adapter storage buffers per stage: {}",
        adapter.limits().max_storage_buffers_per_shader_stage
    );
    let (device, queue) = pollster::block_on(adapter.request_device(&desc)).unwrap();
    eprintln!(
        "device: {}",
        device.limits().max_storage_buffers_per_shader_stage
    );
    match tpri::gpu::GpuContext::from_device(device, queue) {
        Ok(_) => eprintln!("opened"),
        Err(e) => eprintln!("error: {e:#}"),
    }
}
