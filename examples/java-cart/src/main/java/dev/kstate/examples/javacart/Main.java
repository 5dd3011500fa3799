package dev.kstate.examples.javacart;

import io.cloudstate.javasupport.CloudState;

/**
 * Serves the cart as a Cloudstate user function. The support library listens on HOST:PORT from
 * the environment (its reference.conf: cloudstate.user-function-interface / -port, default
 * 127.0.0.1:8080) and answers kstate's discovery, then the entity streams. Coordinated shutdown
 * stops the JVM on SIGTERM.
 */
public final class Main {
  private Main() {}

  public static void main(String[] args) throws Exception {
    new CloudState()
        .registerEventSourcedEntity(
            CartEntity.class,
            CartApi.getDescriptor().findServiceByName("JavaCart"),
            Domain.getDescriptor())
        .start()
        .toCompletableFuture()
        .get();
  }
}
