package dev.kstate.examples.javacart;

import com.google.protobuf.Empty;
import io.cloudstate.javasupport.EntityId;
import io.cloudstate.javasupport.eventsourced.CommandContext;
import io.cloudstate.javasupport.eventsourced.CommandHandler;
import io.cloudstate.javasupport.eventsourced.EventHandler;
import io.cloudstate.javasupport.eventsourced.EventSourcedEntity;
import io.cloudstate.javasupport.eventsourced.Snapshot;
import io.cloudstate.javasupport.eventsourced.SnapshotHandler;
import java.util.LinkedHashMap;
import java.util.Map;

/**
 * One shopping cart. The support library creates an instance per entity id when kstate opens the
 * entity's stream, hands it the snapshot (if any) and the later events, then the commands one at a
 * time. Commands only validate and emit; state changes only in the event handlers, so replaying
 * the journal rebuilds exactly the state the replies were computed from.
 */
@EventSourcedEntity(persistenceId = CartEntity.PERSISTENCE_ID, snapshotEvery = CartEntity.SNAPSHOT_EVERY)
public final class CartEntity {
  /** kstate keeps the events in topic kstate.java-cart.events, snapshots in kstate.java-cart.snapshots. */
  public static final String PERSISTENCE_ID = "java-cart";
  /** The library attaches a snapshot to the reply whose events cross a multiple of this. */
  public static final int SNAPSHOT_EVERY = 5;

  private final String cartId;
  /** product id → line, in the order the products were first added. */
  private final Map<String, Domain.Line> lines = new LinkedHashMap<>();

  public CartEntity(@EntityId String cartId) {
    this.cartId = cartId;
  }

  @Snapshot
  public Domain.CartSnapshot snapshot() {
    return Domain.CartSnapshot.newBuilder().addAllLines(lines.values()).build();
  }

  @SnapshotHandler
  public void restore(Domain.CartSnapshot snapshot) {
    lines.clear();
    for (Domain.Line line : snapshot.getLinesList()) {
      lines.put(line.getProductId(), line);
    }
  }

  @EventHandler
  public void itemAdded(Domain.ItemAdded event) {
    Domain.Line added = event.getItem();
    Domain.Line old = lines.get(added.getProductId());
    if (old == null) {
      lines.put(added.getProductId(), added);
    } else {
      lines.put(added.getProductId(),
          old.toBuilder().setQuantity(old.getQuantity() + added.getQuantity()).build());
    }
  }

  @EventHandler
  public void itemRemoved(Domain.ItemRemoved event) {
    lines.remove(event.getProductId());
  }

  @CommandHandler(name = "AddItem")
  public Empty addItem(CartApi.AddItemCommand cmd, CommandContext ctx) {
    if (cmd.getQuantity() <= 0) {
      // ctx.fail throws; the library turns it into the reply's client_action.failure, which
      // kstate returns to the caller as gRPC UNKNOWN with this description.
      throw ctx.fail("cannot add " + cmd.getQuantity() + " of " + cmd.getProductId()
          + " to cart " + cartId + ": quantity must be positive");
    }
    ctx.emit(Domain.ItemAdded.newBuilder()
        .setItem(Domain.Line.newBuilder()
            .setProductId(cmd.getProductId())
            .setName(cmd.getName())
            .setQuantity(cmd.getQuantity()))
        .build());
    return Empty.getDefaultInstance();
  }

  @CommandHandler(name = "RemoveItem")
  public Empty removeItem(CartApi.RemoveItemCommand cmd, CommandContext ctx) {
    if (!lines.containsKey(cmd.getProductId())) {
      throw ctx.fail("cannot remove " + cmd.getProductId() + " from cart " + cartId
          + ": it is not in the cart");
    }
    ctx.emit(Domain.ItemRemoved.newBuilder().setProductId(cmd.getProductId()).build());
    return Empty.getDefaultInstance();
  }

  @CommandHandler(name = "GetCart")
  public CartApi.CartView getCart(CartApi.GetCartQuery query) {
    CartApi.CartView.Builder view = CartApi.CartView.newBuilder();
    for (Domain.Line line : lines.values()) {
      view.addItems(CartApi.CartLine.newBuilder()
          .setProductId(line.getProductId())
          .setName(line.getName())
          .setQuantity(line.getQuantity()));
    }
    return view.build();
  }
}
